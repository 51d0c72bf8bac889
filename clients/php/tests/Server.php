<?php

declare(strict_types=1);

namespace Glockd\Tests;

/**
 * A glockd process for the tests, listening on 127.0.0.1 only: $GLOCKD_BIN,
 * or else built once from the repository (go build). Its port is found by
 * binding port 0 and releasing it.
 */
final class Server
{
    private static ?string $bin = null;
    private static ?string $tmp = null;
    private static ?string $certs = null;

    /** @var resource */
    private $proc;
    public int $port;
    public int $pid;
    public ?string $unixPath = null;
    private bool $stopped = false;

    /** @param list<string> $extra */
    public function __construct(array $extra = [], bool $tls = false, bool $unix = false)
    {
        for ($try = 0; $try < 5; $try++) {
            $this->port = self::freePort();
            $args = [self::bin(), '-bind', '127.0.0.1', '-ws', '0', '-auth-failure-delay', '100ms'];
            if ($tls) {
                $c = self::certs();
                array_push($args, '-port', '0', '-tls-port', (string) $this->port,
                    '-tls-cert', "$c/server.crt", '-tls-key', "$c/server.key");
            } else {
                array_push($args, '-port', (string) $this->port);
            }
            if ($unix) {
                $this->unixPath = self::tmp() . '/glockd-' . bin2hex(random_bytes(4)) . '.sock';
                array_push($args, '-unix', $this->unixPath);
            }
            $args = array_merge($args, $extra);
            $proc = proc_open($args, [0 => ['file', '/dev/null', 'r'], 1 => ['file', '/dev/null', 'w'],
                2 => ['file', '/dev/null', 'w']], $pipes);
            if ($proc === false) {
                throw new \RuntimeException('cannot start glockd');
            }
            $this->proc = $proc;
            $this->pid = proc_get_status($proc)['pid'];
            if ($this->ready()) {
                return;
            }
            $this->close();
        }
        throw new \RuntimeException('glockd did not start');
    }

    private function ready(): bool
    {
        $deadline = microtime(true) + 15;
        while (microtime(true) < $deadline) {
            if (!proc_get_status($this->proc)['running']) {
                return false; // the port was taken meanwhile
            }
            $s = @stream_socket_client("tcp://127.0.0.1:{$this->port}", $errno, $errstr, 1);
            if ($s !== false) {
                fclose($s);
                if ($this->unixPath === null || file_exists($this->unixPath)) {
                    return true;
                }
            }
            usleep(20000);
        }
        return false;
    }

    public function addr(): string
    {
        return "127.0.0.1:{$this->port}";
    }

    public function unixAddr(): string
    {
        return 'unix://' . $this->unixPath;
    }

    public function kill9(): void
    {
        posix_kill($this->pid, SIGKILL);
    }

    /** SIGSTOP, and wait until it has taken effect. */
    public function stop(): void
    {
        posix_kill($this->pid, SIGSTOP);
        $this->stopped = true;
        $deadline = microtime(true) + 5;
        while (microtime(true) < $deadline) {
            $stat = (string) @file_get_contents("/proc/{$this->pid}/stat");
            $after = substr($stat, (int) strrpos($stat, ')') + 2);
            if (str_starts_with($after, 'T')) {
                return;
            }
            usleep(1000);
        }
    }

    public function close(): void
    {
        if (proc_get_status($this->proc)['running']) {
            if ($this->stopped) {
                posix_kill($this->pid, SIGCONT);
            }
            posix_kill($this->pid, SIGKILL);
        }
        proc_close($this->proc);
    }

    public static function deadAddr(): string
    {
        return '127.0.0.1:' . self::freePort();
    }

    private static function freePort(): int
    {
        $s = stream_socket_server('tcp://127.0.0.1:0', $errno, $errstr);
        $name = stream_socket_get_name($s, false);
        fclose($s);
        return (int) substr($name, strrpos($name, ':') + 1);
    }

    public static function tmp(): string
    {
        if (self::$tmp === null) {
            self::$tmp = sys_get_temp_dir() . '/glockd-php-tests-' . getmypid();
            @mkdir(self::$tmp, 0700, true);
            $dir = self::$tmp;
            register_shutdown_function(fn () => exec('rm -rf ' . escapeshellarg($dir)));
        }
        return self::$tmp;
    }

    private static function repoRoot(): string
    {
        $d = __DIR__;
        while (!file_exists("$d/go.mod")) {
            $parent = dirname($d);
            if ($parent === $d) {
                throw new \RuntimeException('not inside the glockd repository and GLOCKD_BIN not set');
            }
            $d = $parent;
        }
        return $d;
    }

    public static function bin(): string
    {
        if (self::$bin === null) {
            $bin = getenv('GLOCKD_BIN');
            if ($bin === false || $bin === '') {
                $bin = self::tmp() . '/glockd';
                exec('cd ' . escapeshellarg(self::repoRoot()) . ' && go build -o ' . escapeshellarg($bin) . ' .', $out, $rc);
                if ($rc !== 0) {
                    throw new \RuntimeException('go build failed');
                }
            }
            self::$bin = $bin;
        }
        return self::$bin;
    }

    /** A CA and a server certificate for 127.0.0.1, by scripts/make-certs.sh. */
    public static function certs(): string
    {
        if (self::$certs === null) {
            $d = self::tmp() . '/certs';
            exec('sh ' . escapeshellarg(self::repoRoot() . '/scripts/make-certs.sh') . ' ' . escapeshellarg($d) . ' >/dev/null 2>&1', $out, $rc);
            if ($rc !== 0) {
                throw new \RuntimeException('make-certs.sh failed');
            }
            self::$certs = $d;
        }
        return self::$certs;
    }

    /** An ACL file: [identity, token, permissions, patterns] per line. @param list<array{0:string,1:string,2:string,3:string}> $lines */
    public static function aclFile(array $lines): string
    {
        $path = self::tmp() . '/acl-' . bin2hex(random_bytes(4));
        $text = '';
        foreach ($lines as [$id, $token, $perms, $patterns]) {
            $text .= "$id sha256:" . hash('sha256', $token) . " $perms $patterns\n";
        }
        file_put_contents($path, $text);
        return $path;
    }
}
