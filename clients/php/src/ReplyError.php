<?php

declare(strict_types=1);

namespace Glockd;

/** A reply the protocol does not allow for the command sent. */
class ReplyError extends GlockdException
{
    /** @param list<string> $lines */
    public function __construct(public readonly string $command, public readonly array $lines)
    {
        parent::__construct(sprintf('glockd: "%s": unexpected reply %s', $command, json_encode($lines)));
    }
}
