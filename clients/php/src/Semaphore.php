<?php

declare(strict_types=1);

namespace Glockd;

/** A shared lock or semaphore slot taken through a Client (sg, sgw). */
final class Semaphore
{
    private bool $released = false;

    /** @internal */
    public function __construct(private readonly Connection $conn, private readonly string $name, private readonly int $count)
    {
    }

    public function name(): string
    {
        return $this->name;
    }

    /** How many connections held it when this one took it, this one included. */
    public function count(): int
    {
        return $this->count;
    }

    /** A !ping round trip on the connection: true while the slot is held. */
    public function stillHeld(): bool
    {
        return !$this->released && $this->conn->ping();
    }

    public function isLost(): bool
    {
        return $this->conn->lost();
    }

    /**
     * Releases the slot; the sr is sent when the connection's last handle on
     * the name is released (the server counts each connection once).
     */
    public function release(): void
    {
        if ($this->released) {
            throw new NotHeld("glockd: \"{$this->name}\": already released");
        }
        $this->released = true;
        $err = $this->conn->error();
        if ($err !== null) {
            throw new SessionLost($err);
        }
        $st = &$this->conn->shared[$this->name];
        if ($st[0] > 1) {
            $st[0]--;
            return;
        }
        unset($this->conn->shared[$this->name]);
        $cmd = Replies::line('sr', $this->name);
        [$lines] = $this->conn->request([[$cmd, false]]);
        if (!Replies::flag($cmd, $lines, $this->name, '1 Shared Lock Release Success: ', '0 Shared Lock Release Failure: ')) {
            throw new NotHeld("glockd: \"$cmd\": the server says this connection does not hold it");
        }
    }
}
