#ifndef HERALD_CHIREDIS_SHIM_H
#define HERALD_CHIREDIS_SHIM_H
// Only the RESP reader and the command formatter: I/O is SwiftNIO's.
#include <hiredis/read.h>
#include <hiredis/hiredis.h>
#endif
