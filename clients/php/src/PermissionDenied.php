<?php

declare(strict_types=1);

namespace Glockd;

/** The server's ACL does not let this identity do that (on that name). */
class PermissionDenied extends GlockdException
{
    public function __construct(private ?string $lockName, string $command, string $reply)
    {
        parent::__construct(sprintf('glockd: "%s": %s', $command, $reply));
    }

    /** The lock name refused, or null for a command on no name (d, q, ...). */
    public function lockName(): ?string
    {
        return $this->lockName;
    }
}
