<?php

declare(strict_types=1);

namespace Glockd\Tests;

use PHPUnit\Framework\TestCase;

/** Runs examples/failover.php, written from the README alone, and kills the first server under it. */
final class ExampleTest extends TestCase
{
    public function testFailoverExample(): void
    {
        $first = new Server();
        $second = new Server();
        try {
            $proc = proc_open([PHP_BINARY, __DIR__ . '/../examples/failover.php', $first->addr(), $second->addr()],
                [0 => ['file', '/dev/null', 'r'], 1 => ['pipe', 'w'], 2 => ['pipe', 'w']], $pipes);
            $line = (string) fgets($pipes[1]);
            $this->assertMatchesRegularExpression('/^locked demo\/failover on ' . preg_quote($first->addr()) . ' token [1-9][0-9]*\n$/', $line);
            $t0 = microtime(true);
            $first->kill9();
            $this->assertSame("lost\n", fgets($pipes[1]));
            $this->assertLessThan(0.5, microtime(true) - $t0, 'the 50 ms poll of stillHeld() sees the kill');
            $line2 = (string) fgets($pipes[1]);
            $this->assertMatchesRegularExpression('/^locked demo\/failover on ' . preg_quote($second->addr()) . ' token [1-9][0-9]*\n$/', $line2);
            $this->assertSame('', stream_get_contents($pipes[2]));
            fclose($pipes[1]);
            fclose($pipes[2]);
            $this->assertSame(0, proc_close($proc));
        } finally {
            $first->close();
            $second->close();
        }
    }
}
