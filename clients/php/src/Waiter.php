<?php

declare(strict_types=1);

namespace Glockd;

/** One line of dw: a connection queued for a lock (gw, sgw, !gw, !sgw). */
final class Waiter
{
    public function __construct(
        public readonly string $lock,
        public readonly string $waiter,  // its registered name (iam), or its connection name
        public readonly bool $shared,    // queued for the shared lock
        public readonly float $queued,   // seconds it has waited, to the millisecond
        public readonly int $deadlock,   // with -deadlocks report: the deadlock it is in; 0 for none
    ) {
    }
}
