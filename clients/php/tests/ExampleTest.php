<?php

declare(strict_types=1);

namespace Glockd\Tests;

use PHPUnit\Framework\TestCase;

/** Runs examples/failover.php, written from the README alone, and kills the first server under it. */
final class ExampleTest extends TestCase
{
    /** A line of the program's output, waiting 15 s at most. @param resource $pipe */
    private function readLine($pipe): string
    {
        $line = '';
        $deadline = microtime(true) + 15;
        while (!str_ends_with($line, "\n") && microtime(true) < $deadline && !feof($pipe)) {
            $r = [$pipe];
            $w = $e = null;
            if (@stream_select($r, $w, $e, 0, 100000) > 0) {
                $line .= (string) fgets($pipe);
            }
        }
        return $line;
    }

    public function testFailoverExample(): void
    {
        $first = new Server();
        $second = new Server();
        try {
            $proc = proc_open([PHP_BINARY, __DIR__ . '/../examples/failover.php', $first->addr(), $second->addr()],
                [0 => ['file', '/dev/null', 'r'], 1 => ['pipe', 'w'], 2 => ['pipe', 'w']], $pipes);
            stream_set_blocking($pipes[1], false);
            $line = $this->readLine($pipes[1]);
            $this->assertMatchesRegularExpression('/^locked demo\/failover on ' . preg_quote($first->addr()) . ' token [1-9][0-9]*\n$/', $line);
            $t0 = microtime(true);
            $first->kill9();
            $this->assertSame("lost\n", $this->readLine($pipes[1]));
            $this->assertLessThan(0.5, microtime(true) - $t0, 'the 50 ms poll of stillHeld() sees the kill');
            $line2 = $this->readLine($pipes[1]);
            $this->assertMatchesRegularExpression('/^locked demo\/failover on ' . preg_quote($second->addr()) . ' token [1-9][0-9]*\n$/', $line2);
            $this->assertSame('', stream_get_contents($pipes[2]));
            fclose($pipes[1]);
            fclose($pipes[2]);
            $this->assertSame(0, proc_close($proc));
            $proc = null;
        } finally {
            if (isset($proc) && is_resource($proc)) {
                proc_terminate($proc, SIGKILL);
            }
            $first->close();
            $second->close();
        }
    }
}
