<?php

declare(strict_types=1);

namespace Glockd;

/**
 * An exclusive lock taken through a Client, with its fencing token. It is held
 * until release(), or until its connection is lost.
 */
final class Lock
{
    use Holding;

    /** @internal */
    public function __construct(private readonly Connection $conn, private readonly string $name, private readonly int $token)
    {
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
     * Releases the lock (r). Throws SessionLost when its connection was lost
     * (the lock was gone already), NotHeld when released already.
     */
    public function release(): void
    {
        $this->markReleased();
        unset($this->conn->exclusive[$this->name]);
        $this->sendRelease('r', '1 Lock Release Success: ', '0 Lock Release Failure: ');
    }
}
