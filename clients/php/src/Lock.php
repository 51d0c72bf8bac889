<?php

declare(strict_types=1);

namespace Glockd;

/**
 * An exclusive lock taken through a Client, with its fencing token. It is held
 * until release(), or until its connection is lost.
 */
final class Lock
{
    private bool $released = false;

    /** @internal */
    public function __construct(private readonly Connection $conn, private readonly string $name, private readonly int $token)
    {
    }

    /** The lock's name as the server knows it (white space normalised). */
    public function name(): string
    {
        return $this->name;
    }

    /**
     * The fencing token: pass it with every write to what the lock guards,
     * which should refuse a token lower than one it has seen.
     */
    public function token(): int
    {
        return $this->token;
    }

    /**
     * A !ping round trip on the lock's connection, within the client's
     * timeout: true while the lock is held. Call it before a critical write.
     * A PHP request has no background heartbeat, so this is how it learns
     * that the server died or stopped. False after release() or once lost.
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
     * Releases the lock (r). Throws SessionLost when its connection was lost
     * (the lock was gone already), NotHeld when released already.
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
        unset($this->conn->exclusive[$this->name]);
        $cmd = Replies::line('r', $this->name);
        [$lines] = $this->conn->request([[$cmd, false]]);
        if (!Replies::flag($cmd, $lines, $this->name, '1 Lock Release Success: ', '0 Lock Release Failure: ')) {
            throw new NotHeld("glockd: \"$cmd\": the server says this connection does not hold it");
        }
    }
}
