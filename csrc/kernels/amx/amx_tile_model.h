// A scalar model of the AMX tile intrinsics, for the test-only emulated build (DESIGN.md §8): the
// AMX kernel source compiles against it unchanged and runs on any CPU.
//
// Semantics (Intel SDM, "Intel AMX"): eight tiles, each up to 16 rows x 64 bytes, shaped by a
// 64-byte config (palette 1: colsb[t] as uint16 at byte 16 + 2t, rows[t] at byte 48 + t).
// tdpbusd C += A.B: A is rows(A) x K u8 (K = colsb(A) bytes), B is K/4 rows of N groups of 4 s8
// (colsb(B) = 4N), C is rows(A) x N int32. Every use that the hardware would fault on (no config,
// a tile index out of range, a tile whose shape does not fit the operation) throws
// qr::InternalError here instead, so a tiling bug fails a test rather than corrupting memory.
#pragma once
#include <cstddef>
#include <cstdint>

namespace qr::amx_model {

void tile_loadconfig(const void* config);
void tile_release();
void tile_zero(int tile);
void tile_loadd(int tile, const void* base, ptrdiff_t stride);
void tile_stored(int tile, void* base, ptrdiff_t stride);
void tile_dpbusd(int c, int a, int b);

// Rows and bytes per row of tile t under the current config (0, 0 when unconfigured).
void tile_shape(int t, int* rows, int* colsb);

}  // namespace qr::amx_model

// The intrinsic names the kernel uses, routed to the model (the compiler's own definitions, if its
// headers were included, are macros too; drop them first).
#undef _tile_loadconfig
#undef _tile_release
#undef _tile_zero
#undef _tile_loadd
#undef _tile_stored
#undef _tile_dpbusd
#define _tile_loadconfig(config) ::qr::amx_model::tile_loadconfig(config)
#define _tile_release() ::qr::amx_model::tile_release()
#define _tile_zero(t) ::qr::amx_model::tile_zero(t)
#define _tile_loadd(t, base, stride) ::qr::amx_model::tile_loadd(t, base, stride)
#define _tile_stored(t, base, stride) ::qr::amx_model::tile_stored(t, base, stride)
#define _tile_dpbusd(c, a, b) ::qr::amx_model::tile_dpbusd(c, a, b)
