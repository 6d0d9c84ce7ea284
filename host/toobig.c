/* toobig.h */
#include "toobig.h"

static _Thread_local int last_from;

void toobig_note(toobig_source from)
{
	last_from = (int)from;
}

void toobig_clear(void)
{
	last_from = TOOBIG_UNKNOWN;
}

toobig_source toobig_last(void)
{
	return (toobig_source)last_from;
}
