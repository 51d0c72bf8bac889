<?php

declare(strict_types=1);

namespace Glockd;

/** The wait was given up (the cancel callback said so); the connection and its other locks are kept. */
class Cancelled extends GlockdException
{
}
