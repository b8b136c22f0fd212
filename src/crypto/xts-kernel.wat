;; XTS mask kernel for atrest (WebAssembly SIMD). Regenerate xts-kernel-wasm.ts with
;; `node scripts/build-wasm.mjs` after editing.
;;
;; xorTweaks(data, tweaks, sectors, blocksPerSector): for every sector s, with T the 16 bytes at
;; tweaks + 16 s (the encrypted tweak), XORs T * alpha^j (GF(2^128), IEEE 1619 little-endian
;; convention) into the j-th 16-byte block of the sector. XTS is then: xorTweaks, AES-ECB over the
;; whole run, xorTweaks again.
(module
  (memory (export "memory") 2)
  (func (export "xorTweaks")
    (param $data i32) (param $tw i32) (param $n i32) (param $bps i32)
    (local $t v128) (local $s v128) (local $end i32) (local $sectorEnd i32)
    (local.set $end (i32.add (local.get $tw) (i32.shl (local.get $n) (i32.const 4))))
    (block $done
      (loop $sector
        (br_if $done (i32.ge_u (local.get $tw) (local.get $end)))
        (local.set $t (v128.load (local.get $tw)))
        (local.set $sectorEnd
          (i32.add (local.get $data) (i32.shl (local.get $bps) (i32.const 4))))
        (loop $block
          (v128.store (local.get $data)
            (v128.xor (v128.load (local.get $data)) (local.get $t)))
          ;; T <- T * alpha: shift each 64-bit lane left by one, carry bit 63 into bit 64, and
          ;; fold bit 127 back in as 0x87.
          (local.set $s (i64x2.shr_s (local.get $t) (i32.const 63)))
          (local.set $t
            (v128.xor
              (i64x2.shl (local.get $t) (i32.const 1))
              (v128.and
                (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $s) (local.get $s))
                (v128.const i64x2 0x87 1))))
          (local.set $data (i32.add (local.get $data) (i32.const 16)))
          (br_if $block (i32.lt_u (local.get $data) (local.get $sectorEnd))))
        (local.set $tw (i32.add (local.get $tw) (i32.const 16)))
        (br $sector))))
)
