<?php

declare(strict_types=1);

namespace Glockd;

/** The lock was released already, or the server says this connection does not hold it. */
class NotHeld extends GlockdException
{
}
