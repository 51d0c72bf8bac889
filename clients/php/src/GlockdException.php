<?php

declare(strict_types=1);

namespace Glockd;

/** Base class of every exception thrown by this package. */
class GlockdException extends \RuntimeException
{
}
