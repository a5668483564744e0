//go:build cgo && linux

package heaptrim

/*
#include <stdlib.h>
#ifdef __GLIBC__
#include <malloc.h>
static int edge_heap_trim(void) { return malloc_trim(0); }
#else
static int edge_heap_trim(void) { return 0; }
#endif
*/
import "C"

// Trim returns free C heap memory to the operating system; it reports
// whether any was returned. It takes the allocator's locks: call it after
// unloading a model, not on the request path.
func Trim() bool { return C.edge_heap_trim() != 0 }
