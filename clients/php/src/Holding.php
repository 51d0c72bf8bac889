<?php

declare(strict_types=1);

namespace Glockd;

/**
 * What a Lock and a Semaphore share: a name held on one connection of a
 * Client, until release() or until the connection is lost. The class using
 * it has the properties $conn (Connection) and $name (string).
 */
trait Holding
{
    private bool $released = false;

    /** The name as the server knows it (white space normalised). */
    public function name(): string
    {
        return $this->name;
    }

    /**
     * A !ping round trip on the connection, within the client's timeout:
     * true while it is held. Call it before a critical write. A PHP request
     * has no background heartbeat, so this is how it learns that the server
     * died or stopped. False after release() or once lost.
     */
    public function stillHeld(): bool
    {
        return !$this->released && $this->conn->ping();
    }

    /** Whether the connection is known to be lost (no round trip). */
    public function isLost(): bool
    {
        return $this->conn->lost();
    }

    /**
     * Marks the handle released. Throws NotHeld when it was released
     * already, SessionLost when its connection was lost (the hold was gone
     * already).
     */
    private function markReleased(): void
    {
        if ($this->released) {
            throw new NotHeld("glockd: \"{$this->name}\": already released");
        }
        $this->released = true;
        $err = $this->conn->error();
        if ($err !== null) {
            throw new SessionLost($err);
        }
    }

    /** Sends VERB NAME (r, sr) and throws NotHeld unless it succeeded. */
    private function sendRelease(string $verb, string $success, string $failure): void
    {
        $cmd = Replies::line($verb, $this->name);
        [$lines] = $this->conn->request([[$cmd, false]]);
        if (!Replies::flag($cmd, $lines, $this->name, $success, $failure)) {
            throw new NotHeld("glockd: \"$cmd\": the server says this connection does not hold it");
        }
    }
}
