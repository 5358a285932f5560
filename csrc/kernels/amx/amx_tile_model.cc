// The scalar AMX tile model (see amx_tile_model.h); plain C++, built only for the emulated paths.
#include "kernels/amx/amx_tile_model.h"

#include <cstring>
#include <string>

#include "core/error.h"

namespace qr::amx_model {
namespace {

constexpr int kTiles = 8, kMaxRows = 16, kMaxColsb = 64;

struct TileState {
  bool configured = false;
  uint8_t rows[kTiles] = {};
  uint16_t colsb[kTiles] = {};
  alignas(64) uint8_t data[kTiles][kMaxRows][kMaxColsb] = {};
};

// Tile state is per thread, as on the hardware.
thread_local TileState state;

[[noreturn]] void fault(const std::string& what) { throw InternalError("AMX model fault: " + what); }

void check_tile(int t, const char* op) {
  if (!state.configured) fault(std::string(op) + " before ldtilecfg");
  if (t < 0 || t >= kTiles) fault(std::string(op) + ": tile index " + std::to_string(t) + " out of range");
  if (state.rows[t] == 0 || state.colsb[t] == 0) fault(std::string(op) + ": tile " + std::to_string(t) + " is not configured");
}

}  // namespace

void tile_loadconfig(const void* config) {
  const uint8_t* cfg = static_cast<const uint8_t*>(config);
  if (cfg[0] == 0) {  // palette 0: back to the init state
    state = TileState{};
    return;
  }
  if (cfg[0] != 1) fault("palette " + std::to_string(cfg[0]) + " is not supported");
  if (cfg[1] != 0) fault("start_row must be 0");
  for (int i = 2; i < 16; ++i)
    if (cfg[i] != 0) fault("reserved config bytes must be 0");
  TileState next;
  next.configured = true;
  for (int t = 0; t < kTiles; ++t) {
    uint16_t colsb;
    std::memcpy(&colsb, cfg + 16 + 2 * t, 2);
    uint8_t rows = cfg[48 + t];
    if (rows > kMaxRows || colsb > kMaxColsb) fault("tile " + std::to_string(t) + " shape exceeds 16 rows x 64 bytes");
    if ((rows == 0) != (colsb == 0)) fault("tile " + std::to_string(t) + " has rows or colsb but not both");
    next.rows[t] = rows;
    next.colsb[t] = colsb;
  }
  state = next;  // a new config zeroes every tile, as ldtilecfg does
}

void tile_shape(int t, int* rows, int* colsb) {
  const bool known = state.configured && t >= 0 && t < kTiles;
  *rows = known ? state.rows[t] : 0;
  *colsb = known ? state.colsb[t] : 0;
}

void tile_release() { state = TileState{}; }

void tile_zero(int t) {
  check_tile(t, "tilezero");
  std::memset(state.data[t], 0, sizeof(state.data[t]));
}

void tile_loadd(int t, const void* base, ptrdiff_t stride) {
  check_tile(t, "tileloadd");
  std::memset(state.data[t], 0, sizeof(state.data[t]));  // bytes beyond the config read as zero
  for (int r = 0; r < state.rows[t]; ++r)
    std::memcpy(state.data[t][r], static_cast<const uint8_t*>(base) + r * stride, state.colsb[t]);
}

void tile_stored(int t, void* base, ptrdiff_t stride) {
  check_tile(t, "tilestored");
  for (int r = 0; r < state.rows[t]; ++r)
    std::memcpy(static_cast<uint8_t*>(base) + r * stride, state.data[t][r], state.colsb[t]);
}

void tile_dpbusd(int c, int a, int b) {
  check_tile(c, "tdpbusd dst");
  check_tile(a, "tdpbusd src1");
  check_tile(b, "tdpbusd src2");
  if (c == a || c == b || a == b) fault("tdpbusd operands must be three different tiles");
  const int m = state.rows[c], n = state.colsb[c] / 4, kbytes = state.colsb[a];
  if (state.colsb[c] % 4 != 0) fault("tdpbusd: colsb of C must be a multiple of 4");
  if (state.rows[a] != m) fault("tdpbusd: rows(A) != rows(C)");
  if (kbytes % 4 != 0) fault("tdpbusd: colsb(A) must be a multiple of 4");
  if (state.rows[b] != kbytes / 4) fault("tdpbusd: rows(B) != colsb(A) / 4");
  if (state.colsb[b] != state.colsb[c]) fault("tdpbusd: colsb(B) != colsb(C)");
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < n; ++j) {
      int32_t acc;
      std::memcpy(&acc, &state.data[c][i][4 * j], 4);
      // int32 arithmetic that wraps, as the hardware's does (a C++ signed overflow would be UB).
      uint32_t sum = static_cast<uint32_t>(acc);
      for (int g = 0; g < kbytes / 4; ++g)
        for (int q = 0; q < 4; ++q)
          sum += static_cast<uint32_t>(static_cast<int32_t>(state.data[a][i][4 * g + q]) *
                                       static_cast<int32_t>(static_cast<int8_t>(state.data[b][g][4 * j + q])));
      acc = static_cast<int32_t>(sum);
      std::memcpy(&state.data[c][i][4 * j], &acc, 4);
    }
  }
}

}  // namespace qr::amx_model
