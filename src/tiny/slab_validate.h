// slab_validate.h — a slab's invariants, checked in full (debug builds).
// The equations are written above slab_meta_t (superslab/superslab.h).
#ifndef HAK_SLAB_VALIDATE_H
#define HAK_SLAB_VALIDATE_H

#include "superslab/superslab.h"

#if HAK_DEBUG
// Check m against every invariant of its state and abort at the first broken
// one. The remote list is read without being taken. quiet: no other thread is
// freeing into m (tests, teardown), so the block count must be exact; at a
// transition a remote free may be in flight and only its lower bound holds.
void slab_validate_at(const slab_meta_t *m, int quiet);
#define slab_validate(m) slab_validate_at((m), 0)
#endif

#endif
