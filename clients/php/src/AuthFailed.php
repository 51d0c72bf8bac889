<?php

declare(strict_types=1);

namespace Glockd;

/** The server refused the token, or wants one and none was given. */
class AuthFailed extends GlockdException
{
}
