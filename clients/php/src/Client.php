<?php

declare(strict_types=1);

namespace Glockd;

/**
 * A client of the glockd lock server.
 *
 *     $c = new Glockd\Client(['10.0.0.1:9999', '10.0.0.2:9999'], ['timeout' => 3.0, 'token' => null, 'tls' => null]);
 *     $c->withLock('nightly-report', 5.0, function (Glockd\Lock $l) { ... $l->token() ... });
 *
 * Locks belong to the connection: the server releases them when it ends.
 * The client connects to the first address that accepts, takes the token and
 * answers a !ping within the timeout. When the connection is lost, every lock
 * taken on it is gone (its stillHeld() says false) and the next call
 * connects again, trying the addresses from the first, and sends the token
 * first. A PHP request is short-lived, so there is no background heartbeat:
 * a Lock's stillHeld() is a !ping round trip, to call before a critical
 * write. While lock() or acquire() waits, a !ping goes out every interval, so
 * a dead or stopped server is noticed within the timeout.
 *
 * Options: timeout (seconds, 3.0): how long the server may leave a command or
 * ping unanswered; interval (seconds, 1.0): pings during a wait; token
 * (?string): sent as "auth TOKEN"; tls (null, true, or an array of PHP ssl
 * context options such as ['cafile' => 'ca.crt', 'local_cert' => ..., 'local_pk' => ...]):
 * TLS to every host:port address (tls://host:port asks for it per address).
 * Addresses: "host:port", "[::1]:port", "tls://host:port", "unix:///path".
 */
final class Client
{
    /** @var list<string> */
    private array $addresses;
    private float $timeout;
    private float $interval;
    private ?string $token;
    /** @var array<string,mixed>|bool|null */
    private array|bool|null $tls;
    private ?Connection $conn = null;

    /**
     * @param list<string>|string $addresses
     * @param array{timeout?:float,interval?:float,token?:?string,tls?:array<string,mixed>|bool|null} $options
     */
    public function __construct(array|string $addresses, array $options = [])
    {
        $this->addresses = array_values((array) $addresses);
        $unknown = array_diff(array_keys($options), ['timeout', 'interval', 'token', 'tls']);
        if ($unknown !== []) {
            throw new \InvalidArgumentException('glockd: unknown options: ' . implode(', ', $unknown));
        }
        $this->timeout = (float) ($options['timeout'] ?? 3.0);
        $this->interval = (float) ($options['interval'] ?? 1.0);
        $this->token = $options['token'] ?? null;
        $this->tls = $options['tls'] ?? null;
        if ($this->timeout <= 0 || $this->interval <= 0) {
            throw new \InvalidArgumentException('glockd: timeout and interval must be positive');
        }
        $this->connection();
    }

    /** The live connection, made anew (from the first address) after a loss. */
    private function connection(): Connection
    {
        if ($this->conn === null || $this->conn->lost()) {
            $this->conn = null;
            $this->conn = Connection::open($this->addresses, $this->timeout, $this->interval, $this->token, $this->tls);
        }
        return $this->conn;
    }

    /** The address connected to (connecting if need be). */
    public function address(): string
    {
        return $this->connection()->address;
    }

    /** Closes the connection, which releases its locks. The next call connects again. */
    public function close(): void
    {
        $this->conn?->close();
    }

    public function __destruct()
    {
        $this->close();
    }

    /**
     * Takes the exclusive lock $name, waiting (gw) up to $timeout seconds
     * (null: until granted). Throws LockTimeout when it is not granted in
     * time, SessionLost, PermissionDenied. $cancel, if given, is called while
     * waiting (every 50 ms); when it returns true the wait is given up
     * (!cancel) and Cancelled thrown, the connection and its other locks kept.
     */
    public function lock(string $name, ?float $timeout = null, ?callable $cancel = null): Lock
    {
        $lock = $this->take($name, $timeout, true, $cancel);
        assert($lock !== null);
        return $lock;
    }

    /** Takes the exclusive lock $name if it is free (g); null otherwise. */
    public function tryLock(string $name): ?Lock
    {
        return $this->take($name, 0.0, false, null);
    }

    /**
     * Runs $fn with the lock $name held, and releases it after, even when
     * $fn throws. Returns what $fn returns.
     *
     * @template T
     * @param callable(Lock): T $fn
     * @return T
     */
    public function withLock(string $name, ?float $timeout, callable $fn): mixed
    {
        $lock = $this->lock($name, $timeout);
        try {
            $result = $fn($lock);
        } catch (\Throwable $e) {
            try {
                $lock->release();
            } catch (GlockdException) {
                // $e says more
            }
            throw $e;
        }
        $lock->release();
        return $result;
    }

    private function take(string $name, ?float $timeout, bool $wait, ?callable $cancel): ?Lock
    {
        $norm = Replies::checkName($name);
        $conn = $this->connection();
        if (isset($conn->exclusive[$norm])) {
            // One handle per lock: the server alone would say "success" again.
            if ($wait) {
                throw new LockTimeout("glockd: lock \"$norm\": already held through another handle of this client");
            }
            return null;
        }
        $get = $wait ? sprintf('gw %d %s', Replies::waitMs($timeout), $name) : Replies::line('g', $name);
        $t = Replies::line('t', $name);
        $cancelled = false;
        [$getLines, $tLines] = $conn->request([[$get, false], [$t, false]], $wait, $cancel, $norm, $cancelled);
        $granted = Replies::get($get, $getLines, $norm);
        if ($granted && $cancelled) {
            // Granted just before the cancellation was read: give it back.
            $r = Replies::line('r', $name);
            $conn->request([[$r, false]]);
            $granted = false;
        }
        if (!$granted) {
            if ($cancelled) {
                throw new Cancelled("glockd: lock \"$norm\": cancelled");
            }
            if ($wait) {
                throw new LockTimeout(sprintf('glockd: lock "%s": not granted within %ss', $norm, $timeout ?? 'no limit'));
            }
            return null;
        }
        $conn->exclusive[$norm] = true;
        return new Lock($conn, $norm, Replies::token($t, $tLines, $norm) ?? throw new ReplyError($t, $tLines));
    }

    /**
     * Takes a slot of the semaphore $name, allowing $max holders, waiting
     * (sgw) up to $timeout seconds. Throws LockTimeout, Cancelled,
     * SessionLost, PermissionDenied. A client that holds it already gets
     * another handle at once (the server counts each connection once).
     */
    public function acquire(string $name, int $max, ?float $timeout = null, ?callable $cancel = null): Semaphore
    {
        $sem = $this->takeShared($name, $max, $timeout, true, $cancel);
        assert($sem !== null);
        return $sem;
    }

    /** acquire() without waiting: null when $max connections hold it. */
    public function tryAcquire(string $name, int $max): ?Semaphore
    {
        return $this->takeShared($name, $max, 0.0, false, null);
    }

    /** Takes the shared lock $name (sg), which never waits. */
    public function lockShared(string $name): Semaphore
    {
        $sem = $this->takeShared($name, 0, null, false, null);
        assert($sem !== null);
        return $sem;
    }

    private function takeShared(string $name, int $max, ?float $timeout, bool $wait, ?callable $cancel): ?Semaphore
    {
        if ($max < 0 || ($max === 0 && $wait)) {
            throw new \InvalidArgumentException('glockd: max must be 1 or more');
        }
        $norm = Replies::checkName($name);
        $conn = $this->connection();
        if (isset($conn->shared[$norm])) {
            $conn->shared[$norm][0]++;
            return new Semaphore($conn, $norm, $conn->shared[$norm][1]);
        }
        $get = match (true) {
            $max === 0 => Replies::line('sg', $name),
            default => sprintf('sgw %d %d %s', $wait ? Replies::waitMs($timeout) : 0, $max, $name),
        };
        $cancelled = false;
        [$lines] = $conn->request([[$get, false]], $wait, $cancel, $norm, $cancelled);
        $n = Replies::sharedGet($get, $lines, $norm);
        if ($n > 0 && $cancelled) {
            $conn->request([[Replies::line('sr', $name), false]]);
            $n = 0;
        }
        if ($n === 0) {
            if ($cancelled) {
                throw new Cancelled("glockd: acquire \"$norm\": cancelled");
            }
            if ($wait) {
                throw new LockTimeout(sprintf('glockd: acquire "%s": not granted within %ss', $norm, $timeout ?? 'no limit'));
            }
            return null;
        }
        $conn->shared[$norm] = [1, $n];
        return new Semaphore($conn, $norm, $n);
    }

    // ---- inspecting: one method per verb ----

    /** @return list<string> */
    private function one(string $cmd, bool $multi = false): array
    {
        [$lines] = $this->connection()->request([[$cmd, $multi]]);
        return $lines;
    }

    /** i: whether anyone holds the exclusive lock $name. */
    public function isLocked(string $name): bool
    {
        $n = Replies::checkName($name);
        $cmd = Replies::line('i', $name);
        return Replies::flag($cmd, $this->one($cmd), $n, '1 Lock Is Locked: ', '0 Lock Not Locked: ');
    }

    /** t: the fencing token of the lock's holder, null when unlocked. */
    public function token(string $name): ?int
    {
        $n = Replies::checkName($name);
        $cmd = Replies::line('t', $name);
        return Replies::token($cmd, $this->one($cmd), $n);
    }

    /** si: how many connections hold the shared lock $name. */
    public function sharedCount(string $name): int
    {
        $n = Replies::checkName($name);
        $cmd = Replies::line('si', $name);
        return Replies::count($cmd, $this->one($cmd), $n, ' Shared Lock Is Locked: ', '0 Shared Lock Not Locked: ');
    }

    /** dl: each lock's holder, token, time held and waiters. @return list<LockDetail> */
    public function details(string $name = ''): array
    {
        $n = Replies::checkName($name);
        $cmd = Replies::line('dl', $name);
        return Replies::details($cmd, $this->one($cmd, true), $n);
    }

    /** dw: who waits for each lock, in queue order, and for how long. @return list<Waiter> */
    public function waiters(string $name = ''): array
    {
        $n = Replies::checkName($name);
        $cmd = Replies::line('dw', $name);
        return Replies::waiters($cmd, $this->one($cmd, true), $n);
    }

    /** d: lock name => owner, per exclusive lock. @return array<string,string> */
    public function locks(string $name = ''): array
    {
        $n = Replies::checkName($name);
        $cmd = Replies::line('d', $name);
        $out = [];
        foreach (Replies::pairs($cmd, $this->one($cmd, true), $n) as [$lock, $owner]) {
            $out[$lock] = $owner;
        }
        return $out;
    }

    /** sd: [lock, owner] per holder of each shared lock. @return list<array{0:string,1:string}> */
    public function sharedLocks(string $name = ''): array
    {
        $n = Replies::checkName($name);
        $cmd = Replies::line('sd', $name);
        return Replies::pairs($cmd, $this->one($cmd, true), $n);
    }

    /** who: [connection, registered name] per registered connection. @return list<array{0:string,1:string}> */
    public function who(string $name = ''): array
    {
        $n = Replies::checkName($name);
        $cmd = Replies::line('who', $name);
        return array_values(array_filter(Replies::pairs($cmd, $this->one($cmd, true)),
            fn (array $p) => $n === '' || $p[1] === $n));
    }

    /** q: the server's counters. @return array<string,int> */
    public function stats(): array
    {
        $out = [];
        foreach (Replies::pairs('q', $this->one('q', true)) as [$k, $v]) {
            if (preg_match('/^(0|[1-9][0-9]*)$/', $v) !== 1) {
                throw new ReplyError('q', [$k . ': ' . $v]);
            }
            $out[$k] = (int) $v;
        }
        return $out;
    }

    /** me: [connection name, registered name]. @return array{0:string,1:string} */
    public function me(): array
    {
        $reply = Replies::single('me', $this->one('me'));
        $parts = explode(' ', $reply, 3);
        if (count($parts) === 3 && $parts[0] === '1' && $parts[1] !== '' && $parts[2] !== '') {
            return [$parts[1], $parts[2]];
        }
        Replies::checkCommon('me', $reply);
        throw new ReplyError('me', [$reply]);
    }

    /** iam: register a name for this connection ('' removes it). */
    public function iam(string $name): void
    {
        Replies::checkName($name);
        $cmd = Replies::line('iam', $name);
        $reply = Replies::single($cmd, $this->one($cmd));
        if ($reply !== '1 ok') {
            Replies::checkCommon($cmd, $reply);
            throw new ReplyError($cmd, [$reply]);
        }
    }

    /** perms: "IDENTITY PERMISSIONS PATTERN..." of this connection. */
    public function perms(): string
    {
        $reply = Replies::single('perms', $this->one('perms'));
        if (str_starts_with($reply, '1 ')) {
            return substr($reply, 2);
        }
        Replies::checkCommon('perms', $reply);
        throw new ReplyError('perms', [$reply]);
    }

    /** A !ping round trip: whether the connection (and so its locks) still stands. */
    public function ping(): bool
    {
        return $this->conn !== null && $this->conn->ping();
    }
}
