<?php

declare(strict_types=1);

namespace Glockd;

/** The server was started without that command (-dump=false, -registry=false). */
class Disabled extends GlockdException
{
}
