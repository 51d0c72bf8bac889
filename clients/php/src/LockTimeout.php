<?php

declare(strict_types=1);

namespace Glockd;

/** The lock could not be taken within the timeout; the connection and its other locks are kept. */
class LockTimeout extends GlockdException
{
}
