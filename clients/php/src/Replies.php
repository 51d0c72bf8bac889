<?php

declare(strict_types=1);

namespace Glockd;

/**
 * Parsing of the server's replies.
 *
 * @internal
 */
final class Replies
{
    /** The name as the server sees it: outer white space removed, inner runs made one space. */
    public static function normalize(string $name): string
    {
        // Go's unicode.IsSpace, as the server uses it.
        $parts = @preg_split('/[\t\n\v\f\r \x{85}\x{a0}\p{Z}]+/u', $name, -1, PREG_SPLIT_NO_EMPTY);
        if ($parts === false) { // not UTF-8: the ASCII white space only
            $parts = preg_split('/[\t\n\v\f\r ]+/', $name, -1, PREG_SPLIT_NO_EMPTY) ?: [];
        }
        return implode(' ', $parts);
    }

    public static function checkName(string $name): string
    {
        if (strpbrk($name, "\r\n") !== false) {
            throw new \InvalidArgumentException('glockd: a lock name cannot contain a newline');
        }
        return self::normalize($name);
    }

    public static function line(string $verb, string $arg): string
    {
        return $arg === '' ? $verb : "$verb $arg";
    }

    /** The MS of gw/sgw for a timeout in seconds (null: no limit). */
    public static function waitMs(?float $timeout): int
    {
        if ($timeout === null) {
            return -1;
        }
        if ($timeout <= 0) {
            return 0;
        }
        return max(1, (int) ceil($timeout * 1000));
    }

    /** @param list<string> $lines */
    public static function single(string $cmd, array $lines): string
    {
        if (count($lines) !== 1) {
            throw new ReplyError($cmd, $lines);
        }
        return $lines[0];
    }

    /** Throws the typed exception of a reply that refuses any command. */
    public static function checkCommon(string $cmd, string $reply): void
    {
        if ($reply === '0 Permission Denied' || str_starts_with($reply, '0 Permission Denied: ')) {
            $name = substr($reply, strlen('0 Permission Denied: '));
            throw new PermissionDenied($name === '' ? null : $name, $cmd, $reply);
        }
        if ($reply === '0 Auth Required') {
            throw new AuthFailed("glockd: \"$cmd\": the server requires auth (pass the 'token' option)");
        }
        if ($reply === '0 disabled') {
            throw new Disabled("glockd: \"$cmd\": disabled on this server");
        }
        if (str_starts_with($reply, '0 Too Many Locks')) {
            throw new GlockdException("glockd: \"$cmd\": $reply");
        }
    }

    /** @param list<string> $lines */
    public static function flag(string $cmd, array $lines, string $name, string $yes, string $no): bool
    {
        $reply = self::single($cmd, $lines);
        if ($reply === $yes . $name) {
            return true;
        }
        if ($reply === $no . $name) {
            return false;
        }
        self::checkCommon($cmd, $reply);
        throw new ReplyError($cmd, $lines);
    }

    /** A reply "N"+text+name, or zero+name meaning 0. @param list<string> $lines */
    public static function count(string $cmd, array $lines, string $name, string $text, string $zero = ''): int
    {
        $reply = self::single($cmd, $lines);
        if ($zero !== '' && $reply === $zero . $name) {
            return 0;
        }
        $suffix = $text . $name;
        if (str_ends_with($reply, $suffix)) {
            $n = substr($reply, 0, strlen($reply) - strlen($suffix));
            if (preg_match('/^(0|[1-9][0-9]{0,15})$/', $n) === 1) {
                return (int) $n;
            }
        }
        self::checkCommon($cmd, $reply);
        throw new ReplyError($cmd, $lines);
    }

    /** g or gw: granted or not (Failure and Timeout both mean not). @param list<string> $lines */
    public static function get(string $cmd, array $lines, string $name): bool
    {
        $reply = self::single($cmd, $lines);
        if ($reply === '1 Lock Get Success: ' . $name) {
            return true;
        }
        if ($reply === '0 Lock Get Failure: ' . $name || $reply === '0 Lock Get Timeout: ' . $name) {
            return false;
        }
        self::checkCommon($cmd, $reply);
        throw new ReplyError($cmd, $lines);
    }

    /** sg or sgw: holders now, 0 when the wait ran out. @param list<string> $lines */
    public static function sharedGet(string $cmd, array $lines, string $name): int
    {
        if (self::single($cmd, $lines) === '0 Shared Lock Get Timeout: ' . $name) {
            return 0;
        }
        $n = self::count($cmd, $lines, $name, ' Shared Lock Get Success: ');
        if ($n < 1) {
            throw new ReplyError($cmd, $lines);
        }
        return $n;
    }

    /** t: the token (≤ 2^53-1, an int on 64-bit PHP), or null when unlocked. @param list<string> $lines */
    public static function token(string $cmd, array $lines, string $name): ?int
    {
        if (self::single($cmd, $lines) === '0 Lock Not Locked: ' . $name) {
            return null;
        }
        $n = self::count($cmd, $lines, $name, ' Lock Token: ');
        if ($n < 1 || $n > 9007199254740991) {
            throw new ReplyError($cmd, $lines);
        }
        return $n;
    }

    /**
     * d, sd, who, dl, q: "KEY: VALUE" per line. A refusal is one line
     * without ": ".
     *
     * @param list<string> $lines
     * @return list<array{0:string,1:string}>
     */
    public static function pairs(string $cmd, array $lines, string $name = ''): array
    {
        if (count($lines) === 1 && in_array($lines[0], ['0 disabled', '0 Permission Denied', '0 Auth Required'], true)) {
            self::checkCommon($cmd, $lines[0]);
        }
        $out = [];
        foreach ($lines as $l) {
            if ($name !== '') {
                $ok = str_starts_with($l, $name . ': ');
                [$key, $value] = [$name, (string) substr($l, strlen($name) + 2)];
            } else {
                $pos = strpos($l, ': ');
                $ok = $pos !== false;
                [$key, $value] = $ok ? [substr($l, 0, $pos), substr($l, $pos + 2)] : ['', ''];
            }
            if (!$ok || $value === '') {
                throw new ReplyError($cmd, $lines);
            }
            $out[] = [$key, $value];
        }
        return $out;
    }

    /**
     * dw: "LOCK: WAITER [shared ]queued_ms=MS[ deadlock=N]", read from the
     * end of each line, since a waiter's name may hold spaces.
     * @param list<string> $lines
     * @return list<Waiter>
     */
    public static function waiters(string $cmd, array $lines, string $name = ''): array
    {
        $out = [];
        foreach (self::pairs($cmd, $lines, $name) as [$lock, $rest]) {
            $f = explode(' ', $rest);
            $deadlock = 0;
            if (preg_match('/^deadlock=(0|[1-9][0-9]*)$/', $f[count($f) - 1], $m) === 1) {
                $deadlock = (int) $m[1];
                array_pop($f);
            }
            if (preg_match('/^queued_ms=(0|[1-9][0-9]*)$/', (string) array_pop($f), $m) !== 1) {
                throw new ReplyError($cmd, $lines);
            }
            $queued = (int) $m[1] / 1000;
            $shared = count($f) > 1 && $f[count($f) - 1] === 'shared';
            if ($shared) {
                array_pop($f);
            }
            $w = new Waiter($lock, implode(' ', $f), $shared, $queued, $deadlock);
            if ($w->waiter === '') {
                throw new ReplyError($cmd, $lines);
            }
            $out[] = $w;
        }
        return $out;
    }

    /** @param list<string> $lines @return list<LockDetail> */
    public static function details(string $cmd, array $lines, string $name = ''): array
    {
        $out = [];
        foreach (self::pairs($cmd, $lines, $name) as [$lock, $rest]) {
            $f = explode(' ', $rest);
            $n = count($f);
            $field = function (int $i, string $key) use ($f, $n, $cmd, $lines): int {
                if ($n < $i || preg_match('/^' . $key . '=(0|[1-9][0-9]*)$/', $f[$n - $i], $m) !== 1) {
                    throw new ReplyError($cmd, $lines);
                }
                return (int) $m[1];
            };
            $waiters = $field(1, 'waiters');
            if ($n >= 5 && $f[$n - 4] === 'shared') {
                $d = new LockDetail($lock, implode(' ', array_slice($f, 0, $n - 4)), true, 0,
                    $field(3, 'held_ms') / 1000, $field(2, 'holders'), $waiters);
            } elseif ($n >= 4) {
                $d = new LockDetail($lock, implode(' ', array_slice($f, 0, $n - 3)), false, $field(3, 'token'),
                    $field(2, 'held_ms') / 1000, 1, $waiters);
            } else {
                throw new ReplyError($cmd, $lines);
            }
            if ($d->owner === '') {
                throw new ReplyError($cmd, $lines);
            }
            $out[] = $d;
        }
        return $out;
    }
}
