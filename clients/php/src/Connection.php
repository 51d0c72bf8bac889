<?php

declare(strict_types=1);

namespace Glockd;

/**
 * One connection to glockd. Replies are read in order; the out-of-band
 * replies (!pong, !cancel 0, !cancel 1) are recognised by their exact text.
 *
 * @internal used by Client, Lock and Semaphore
 */
final class Connection
{
    /** @var resource|null */
    private $stream;
    private string $buf = '';
    /** @var list<string> reply lines read and not yet claimed, in order */
    private array $queue = [];
    /** @var list<float> send times of the pings not yet answered */
    private array $pings = [];
    private int $pongs = 0;
    private ?string $error = null;
    /** when the latest command or ping answered was sent */
    private float $alive;
    private string $fence;
    /** @var array<string,true> exclusive names with a handle */
    public array $exclusive = [];
    /** @var array<string,array{0:int,1:int}> shared names: [handles, holders when taken] */
    public array $shared = [];

    /** @param resource $stream */
    private function __construct(
        public readonly string $address,
        $stream,
        private readonly float $timeout,
        private readonly float $interval,
    ) {
        $this->stream = $stream;
        $this->alive = microtime(true);
        $this->fence = 'glockd-client-fence-' . bin2hex(random_bytes(8));
    }

    /**
     * Connects to the first address that accepts, takes the token (sent
     * first, on every connection) and answers a !ping within the timeout: a
     * stopped server still accepts connections in its kernel, and is passed
     * over. A refused token is thrown at once, not tried elsewhere.
     *
     * @param list<string> $addresses
     * @param array<string,mixed>|true|null $tls
     */
    public static function open(array $addresses, float $timeout, float $interval, ?string $token, array|bool|null $tls): self
    {
        if ($addresses === []) {
            throw new \InvalidArgumentException('glockd: no address');
        }
        if ($token !== null && ($token === '' || strpbrk($token, "\r\n") !== false)) {
            throw new \InvalidArgumentException('glockd: bad token');
        }
        $parsed = array_map(fn (string $a) => self::parse($a, $tls !== null && $tls !== false), $addresses);
        $errors = [];
        foreach ($parsed as $i => [$uri, $host, $useTls]) {
            $addr = $addresses[$i];
            $ctx = stream_context_create();
            if ($useTls) {
                $opts = is_array($tls) ? $tls : [];
                $opts += ['peer_name' => $host, 'verify_peer' => true, 'verify_peer_name' => true, 'SNI_enabled' => true];
                stream_context_set_option($ctx, ['ssl' => $opts]);
            }
            $errno = 0;
            $errstr = '';
            $s = @stream_socket_client($uri, $errno, $errstr, $timeout, STREAM_CLIENT_CONNECT, $ctx);
            if ($s === false) {
                $errors[] = "$addr: " . ($errstr !== '' ? $errstr : "error $errno");
                continue;
            }
            if ($useTls) {
                stream_set_timeout($s, (int) ceil($timeout));
                $ok = false;
                set_error_handler(function (int $no, string $msg) use (&$errstr): bool {
                    $errstr = $msg;
                    return true;
                });
                try {
                    $ok = stream_socket_enable_crypto($s, true, STREAM_CRYPTO_METHOD_TLSv1_2_CLIENT | STREAM_CRYPTO_METHOD_TLSv1_3_CLIENT);
                } finally {
                    restore_error_handler();
                }
                if ($ok !== true) {
                    fclose($s);
                    $errors[] = "$addr: TLS: " . ($errstr !== '' ? $errstr : 'handshake failed');
                    continue;
                }
            }
            stream_set_blocking($s, false);
            $conn = new self($addr, $s, $timeout, $interval);
            try {
                if ($token !== null) {
                    // A refused token is answered after the server's delay (1 s by default).
                    [$lines] = $conn->request([['auth ' . $token, false]], slack: 2.0);
                    $reply = Replies::single('auth', $lines);
                    if ($reply === '0 Auth Failure') {
                        throw new AuthFailed('glockd: auth failed: the server refused the token');
                    }
                    if ($reply !== '1 ok' && $reply !== '0 disabled') {
                        throw new ReplyError('auth ...', $lines);
                    }
                }
                if (!$conn->ping()) {
                    $errors[] = "$addr: " . $conn->error();
                    continue;
                }
            } catch (AuthFailed $e) {
                $conn->close();
                throw $e;
            } catch (SessionLost $e) {
                $errors[] = "$addr: " . $e->getMessage();
                continue;
            }
            return $conn;
        }
        throw new SessionLost('glockd: no address answered: ' . implode('; ', $errors));
    }

    /**
     * "host:port", "[::1]:port", "tcp://host:port", "tls://host:port" or
     * "unix:///path".
     *
     * @return array{0:string,1:string,2:bool} [uri, host, tls]
     */
    private static function parse(string $addr, bool $tls): array
    {
        if (str_starts_with($addr, 'unix://')) {
            return [$addr, '', false];
        }
        if (str_starts_with($addr, 'tls://')) {
            $tls = true;
            $addr = substr($addr, 6);
        } elseif (str_starts_with($addr, 'tcp://')) {
            $addr = substr($addr, 6);
        }
        if (preg_match('/^(\[[^\]]+\]|[^:\[\]\/]+):([0-9]{1,5})$/', $addr, $m) !== 1) {
            throw new \InvalidArgumentException("glockd: address \"$addr\" is not host:port or unix:///path");
        }
        return ['tcp://' . $m[1] . ':' . $m[2], trim($m[1], '[]'), $tls];
    }

    public function lost(): bool
    {
        return $this->error !== null;
    }

    public function error(): ?string
    {
        return $this->error;
    }

    public function timeout(): float
    {
        return $this->timeout;
    }

    /** Declares the connection lost, once, and closes it (the server then releases its locks). */
    public function lose(string $why): void
    {
        if ($this->error !== null) {
            return;
        }
        $this->error = $why;
        if (is_resource($this->stream)) {
            fclose($this->stream);
        }
        $this->stream = null;
    }

    public function close(): void
    {
        $this->lose('glockd: closed');
    }

    private function check(): void
    {
        if ($this->error !== null) {
            throw new SessionLost($this->error);
        }
    }

    private function fail(string $why): never
    {
        $this->lose($why);
        throw new SessionLost($this->error ?? $why);
    }

    /**
     * Sends commands in one write and returns each one's reply lines. A
     * multi-line command is followed by "i FENCE", on a name no one uses, and
     * read up to that reply. When $wait, the first command is a wait (gw,
     * sgw): while it is pending a !ping goes out every interval and the
     * connection is lost when nothing is answered within the timeout; if
     * $cancel returns true, "!cancel NAME" is sent and $cancelled set.
     *
     * @param list<array{0:string,1:bool}> $cmds [line, multi]
     * @return list<list<string>>
     */
    public function request(array $cmds, bool $wait = false, ?callable $cancel = null, string $name = '',
        ?bool &$cancelled = null, float $slack = 0.0): array
    {
        $this->check();
        $cancelled = false;
        $data = '';
        foreach ($cmds as [$line, $multi]) {
            if (strpbrk($line, "\r\n") !== false) {
                throw new \InvalidArgumentException("glockd: a command cannot contain a newline");
            }
            $data .= $line . "\n";
            if ($multi) {
                $data .= 'i ' . $this->fence . "\n";
            }
        }
        $sent = microtime(true);
        $this->write($data);
        $fenceReplies = ['0 Lock Not Locked: ' . $this->fence, '1 Lock Is Locked: ' . $this->fence,
            '0 Permission Denied: ' . $this->fence];
        $replies = [];
        foreach ($cmds as $i => [$line, $multi]) {
            $waiting = $wait && $i === 0;
            $lines = [];
            while (true) {
                $l = $waiting
                    ? $this->readWaiting($cancel, $name, $cancelled)
                    : $this->readLine(microtime(true) + $this->timeout + $slack, $line);
                if ($multi && in_array($l, $fenceReplies, true)) {
                    break;
                }
                $lines[] = $l;
                if (!$multi) {
                    break;
                }
            }
            $replies[] = $lines;
        }
        $this->alive = max($this->alive, $sent);
        return $replies;
    }

    /** A !ping round trip within the timeout; false (and the connection lost) without one. */
    public function ping(): bool
    {
        if ($this->error !== null) {
            return false;
        }
        try {
            $now = microtime(true);
            $this->pings[] = $now;
            $want = $this->pongs + count($this->pings); // pings are answered in order
            $this->write("!ping\n");
            $deadline = $now + $this->timeout;
            while (true) {
                $this->drain();
                if ($this->pongs >= $want) {
                    return true;
                }
                $left = $deadline - microtime(true);
                if ($left <= 0) {
                    $this->fail(sprintf('glockd: no answer to !ping from %s within %gs', $this->address, $this->timeout));
                }
                $this->fill($left);
            }
        } catch (SessionLost) {
            return false;
        }
    }

    private function readLine(float $deadline, string $cmd): string
    {
        while (true) {
            $this->drain();
            if ($this->queue !== []) {
                return array_shift($this->queue);
            }
            $left = $deadline - microtime(true);
            if ($left <= 0) {
                $this->fail(sprintf('glockd: "%s": no reply from %s in time', $cmd, $this->address));
            }
            $this->fill($left);
        }
    }

    /** @param-out bool $cancelled */
    private function readWaiting(?callable $cancel, string $name, ?bool &$cancelled): string
    {
        $nextPing = microtime(true) + $this->interval;
        while (true) {
            $this->drain();
            if ($this->queue !== []) {
                return array_shift($this->queue);
            }
            $now = microtime(true);
            if ($now - $this->alive >= $this->timeout) {
                $this->fail(sprintf('glockd: no answer from %s for %gs', $this->address, $this->timeout));
            }
            if ($now >= $nextPing) {
                $this->pings[] = $now;
                $this->write("!ping\n");
                $nextPing = $now + $this->interval;
            }
            $tick = min($nextPing, $this->alive + $this->timeout) - $now;
            if ($cancel !== null && !$cancelled) {
                if ($cancel()) {
                    $this->write(rtrim('!cancel ' . $name) . "\n");
                    $cancelled = true;
                } else {
                    $tick = min($tick, 0.05);
                }
            }
            $this->fill(max(0.0, $tick));
        }
    }

    /** Moves the complete lines of the buffer to the queue, counting pongs. */
    private function drain(): void
    {
        while (($pos = strpos($this->buf, "\n")) !== false) {
            $line = substr($this->buf, 0, $pos);
            $this->buf = substr($this->buf, $pos + 1);
            if ($line === '!pong') {
                if ($this->pings !== []) {
                    $this->alive = max($this->alive, array_shift($this->pings));
                }
                $this->pongs++;
            } elseif ($line !== '!cancel 0' && $line !== '!cancel 1') {
                $this->queue[] = $line;
            }
        }
    }

    /** Reads what has come, waiting up to $wait seconds for something. */
    private function fill(float $wait): void
    {
        $this->check();
        $data = @fread($this->stream, 65536);
        if ($data === false) {
            $this->fail("glockd: connection to {$this->address} failed");
        }
        if ($data !== '') {
            $this->buf .= $data;
            return;
        }
        if (feof($this->stream)) {
            $this->fail("glockd: {$this->address} closed the connection");
        }
        $r = [$this->stream];
        $w = $e = null;
        $sec = (int) floor($wait);
        $n = @stream_select($r, $w, $e, $sec, (int) (($wait - $sec) * 1e6));
        if ($n === false) {
            return; // interrupted by a signal: the caller looks at the time again
        }
        if ($n > 0) {
            $data = @fread($this->stream, 65536);
            if ($data === false || ($data === '' && feof($this->stream))) {
                $this->fail("glockd: {$this->address} closed the connection");
            }
            $this->buf .= $data;
        }
    }

    private function write(string $data): void
    {
        $this->check();
        $deadline = microtime(true) + $this->timeout;
        while ($data !== '') {
            $n = @fwrite($this->stream, $data);
            if ($n === false) {
                $this->fail("glockd: connection to {$this->address} failed");
            }
            $data = (string) substr($data, $n);
            if ($data === '') {
                return;
            }
            $left = $deadline - microtime(true);
            if ($left <= 0) {
                $this->fail("glockd: {$this->address} takes nothing in");
            }
            $r = $e = null;
            $w = [$this->stream];
            $sec = (int) floor($left);
            @stream_select($r, $w, $e, $sec, (int) (($left - $sec) * 1e6));
        }
    }
}
