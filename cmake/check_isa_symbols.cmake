# Fails the build when an ISA object defines a weak (COMDAT) symbol. Such a symbol (an inline function
# or template instantiated in a unit built with -mavx512f, say) may be the one copy the linker keeps
# for the whole module, and would then run AVX-512 instructions on CPUs without them.
# Usage: cmake -DNM=<nm> -DOBJECTS="<obj>;<obj>..." -P check_isa_symbols.cmake
set(bad "")
foreach(obj IN LISTS OBJECTS)
  if(obj STREQUAL "")
    continue()
  endif()
  execute_process(COMMAND ${NM} --defined-only ${obj} OUTPUT_VARIABLE out RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "nm failed on ${obj}")
  endif()
  string(REPLACE "\n" ";" lines "${out}")
  foreach(line IN LISTS lines)
    # Weak definitions: W/w, V/v (weak objects) and u (unique globals). The exception-handling
    # personality reference every C++ unit carries is harmless data.
    if(line MATCHES " [WwVvu] " AND NOT line MATCHES "DW\\.ref\\.__gxx_personality_v0")
      string(APPEND bad "\n  ${obj}: ${line}")
    endif()
  endforeach()
endforeach()
if(bad)
  message(FATAL_ERROR "ISA objects define weak symbols (see kernels.h, one ISA per unit):${bad}")
endif()
