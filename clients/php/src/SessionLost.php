<?php

declare(strict_types=1);

namespace Glockd;

/**
 * The connection broke, or the server answered nothing within the timeout, or
 * no address could be reached. Every lock taken on that connection must be
 * taken to be gone (or someone else's). The Client connects again on its next
 * call.
 */
class SessionLost extends GlockdException
{
}
