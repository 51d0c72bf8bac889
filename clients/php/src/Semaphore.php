<?php

declare(strict_types=1);

namespace Glockd;

/** A shared lock or semaphore slot taken through a Client (sg, sgw). */
final class Semaphore
{
    use Holding;

    /** @internal */
    public function __construct(private readonly Connection $conn, private readonly string $name, private readonly int $count)
    {
    }

    /** How many connections held it when this one took it, this one included. */
    public function count(): int
    {
        return $this->count;
    }

    /**
     * Releases the slot; the sr is sent when the connection's last handle on
     * the name is released (the server counts each connection once). Throws
     * SessionLost when its connection was lost, NotHeld when released already.
     */
    public function release(): void
    {
        $this->markReleased();
        $st = &$this->conn->shared[$this->name];
        if ($st[0] > 1) {
            $st[0]--;
            return;
        }
        unset($this->conn->shared[$this->name]);
        $this->sendRelease('sr', '1 Shared Lock Release Success: ', '0 Shared Lock Release Failure: ');
    }
}
