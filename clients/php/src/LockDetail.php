<?php

declare(strict_types=1);

namespace Glockd;

/** One line of dl: an exclusive lock, or one holder of a shared lock. */
final class LockDetail
{
    public function __construct(
        public readonly string $lock,
        public readonly string $owner,
        public readonly bool $shared,
        public readonly int $token,     // exclusive: the holder's fencing token; 0 for shared
        public readonly float $held,    // seconds held, to the millisecond
        public readonly int $holders,   // shared: how many hold it; 1 for exclusive
        public readonly int $waiters,
    ) {
    }
}
