<?php

declare(strict_types=1);

namespace Glockd\Tests;

use Glockd\AuthFailed;
use Glockd\Cancelled;
use Glockd\Client;
use Glockd\Lock;
use Glockd\LockTimeout;
use Glockd\NotHeld;
use Glockd\PermissionDenied;
use Glockd\SessionLost;
use Glockd\Waiter;
use PHPUnit\Framework\TestCase;

final class ClientTest extends TestCase
{
    private static Server $server;
    /** @var list<Server> */
    private array $own = [];

    public static function setUpBeforeClass(): void
    {
        self::$server = new Server(unix: true);
    }

    public static function tearDownAfterClass(): void
    {
        self::$server->close();
    }

    protected function tearDown(): void
    {
        foreach ($this->own as $s) {
            $s->close();
        }
    }

    /** @param list<string> $extra */
    private function server(array $extra = [], bool $tls = false): Server
    {
        return $this->own[] = new Server($extra, $tls);
    }

    /** @param array<string,mixed> $options */
    private function client(array $options = [], ?array $addrs = null): Client
    {
        return new Client($addrs ?? [self::$server->addr()], $options);
    }

    private function waiters(Client $c, string $name): int
    {
        foreach ($c->details($name) as $d) {
            return $d->waiters;
        }
        return 0;
    }

    public function testLockTryLockReleaseAndTokensIncrease(): void
    {
        $a = $this->client();
        $b = $this->client();
        $tokens = [];
        for ($i = 0; $i < 3; $i++) {
            $lock = $a->lock('php/basic', 5.0);
            $this->assertIsInt($lock->token());
            $this->assertLessThanOrEqual(2 ** 53 - 1, $lock->token());
            $this->assertNull($b->tryLock('php/basic'));
            $this->assertSame($lock->token(), $b->token('php/basic'));
            $this->assertTrue($lock->stillHeld());
            $tokens[] = $lock->token();
            $lock->release();
            $this->assertFalse($lock->stillHeld());
        }
        $sorted = array_values(array_unique($tokens));
        sort($sorted);
        $this->assertSame($sorted, $tokens, 'tokens must strictly increase');
        $lock = $b->tryLock('php/basic');
        $this->assertInstanceOf(Lock::class, $lock);
        $this->assertGreaterThan(end($tokens), $lock->token());
        $lock->release();
        $this->expectException(NotHeld::class);
        $lock->release();
    }

    public function testWithLockReleasesEvenOnException(): void
    {
        $c = $this->client();
        $got = $c->withLock('php/with', 5.0, fn (Lock $l) => $l->token());
        $this->assertGreaterThan(0, $got);
        $this->assertFalse($c->isLocked('php/with'));
        try {
            $c->withLock('php/with', 5.0, function (Lock $l): void {
                throw new \DomainException('boom');
            });
            $this->fail('no exception');
        } catch (\DomainException) {
        }
        $this->assertFalse($c->isLocked('php/with'));
        $this->assertSame('php/a b', $c->withLock("  php/a \t b ", 1.0, fn (Lock $l) => $l->name()));
    }

    public function testSemaphore(): void
    {
        $a = $this->client();
        $b = $this->client();
        $c = $this->client();
        $s1 = $a->acquire('php/sem', 2, 2.0);
        $s2 = $b->acquire('php/sem', 2, 2.0);
        $this->assertSame([1, 2], [$s1->count(), $s2->count()]);
        $this->assertNull($c->tryAcquire('php/sem', 2));
        $t0 = microtime(true);
        try {
            $c->acquire('php/sem', 2, 0.3);
            $this->fail('granted');
        } catch (LockTimeout) {
        }
        $this->assertGreaterThanOrEqual(0.25, microtime(true) - $t0);
        $again = $a->acquire('php/sem', 2, 0.0);
        $this->assertSame(2, $c->sharedCount('php/sem'));
        $s1->release();
        $this->assertSame(2, $c->sharedCount('php/sem'), 'a second handle still holds it');
        $again->release();
        $s3 = $c->acquire('php/sem', 2, 2.0);
        $this->assertSame(2, $s3->count());
        $s3->release();
        $s2->release();
        $this->assertSame(0, $c->sharedCount('php/sem'));
    }

    public function testWaitTimedOutKeepsTheOtherLocks(): void
    {
        $holder = $this->client();
        $waiter = $this->client();
        $held = $holder->lock('php/to/contended');
        $mine = $waiter->lock('php/to/mine');
        $t0 = microtime(true);
        try {
            $waiter->lock('php/to/contended', 0.3);
            $this->fail('granted');
        } catch (LockTimeout) {
        }
        $this->assertGreaterThanOrEqual(0.25, microtime(true) - $t0);
        $this->assertTrue($mine->stillHeld());
        $this->assertSame($mine->token(), $holder->token('php/to/mine'));
        $held->release();
        $waiter->lock('php/to/contended', 2.0)->release();
        $mine->release();
    }

    public function testWaitCancelledKeepsTheOtherLocks(): void
    {
        $holder = $this->client();
        $waiter = $this->client();
        $holder->lock('php/cancel/contended');
        $mine = $waiter->lock('php/cancel/mine');
        $calls = 0;
        $cancel = function () use (&$calls, $holder): bool {
            $calls++;
            // Give up once the server shows the wait queued.
            return $this->waiters($holder, 'php/cancel/contended') === 1;
        };
        try {
            $waiter->lock('php/cancel/contended', null, $cancel);
            $this->fail('granted');
        } catch (Cancelled) {
        }
        $this->assertGreaterThan(0, $calls);
        $this->assertSame(0, $this->waiters($holder, 'php/cancel/contended'));
        $this->assertTrue($mine->stillHeld());
        $this->assertSame($mine->token(), $holder->token('php/cancel/mine'));
    }

    public function testPingsKeepALongWaitAlive(): void
    {
        $holder = $this->client();
        $waiter = $this->client(['timeout' => 0.6, 'interval' => 0.15]);
        $held = $holder->lock('php/long');
        $mine = $waiter->lock('php/long-mine');
        $t0 = microtime(true);
        try {
            $waiter->lock('php/long', 1.5); // longer than the timeout
            $this->fail('granted');
        } catch (LockTimeout) {
        }
        $this->assertGreaterThanOrEqual(1.4, microtime(true) - $t0);
        $this->assertTrue($mine->stillHeld());
        $held->release();
    }

    public function testUnixSocket(): void
    {
        $c = $this->client([], [self::$server->unixAddr()]);
        $lock = $c->lock('php/unix', 1.0);
        $this->assertTrue($this->client()->isLocked('php/unix'));
        $lock->release();
    }

    public function testInspecting(): void
    {
        $a = $this->client();
        $b = $this->client();
        $b->iam('php-owner b');
        $l = $b->lock('php/insp');
        $this->assertSame(['php/insp' => 'php-owner b'], $a->locks('php/insp'));
        $d = $a->details('php/insp')[0];
        $this->assertSame(['php-owner b', $l->token(), false], [$d->owner, $d->token, $d->shared]);
        $this->assertSame([], $a->locks('php/none'));
        $this->assertGreaterThanOrEqual(1, $a->stats()['locks']);
        $this->assertSame([[$b->me()[0], 'php-owner b']], $a->who('php-owner b'));
        $a->lockShared('php/insp-s');
        $this->assertSame([['php/insp-s', $a->me()[0]]], $a->sharedLocks('php/insp-s'));
        $this->assertTrue($a->isLocked('php/insp'), 'still in step after the multi-line replies');
    }

    public function testWaiters(): void
    {
        $a = $this->client();
        $b = $this->client();
        $lock = $b->lock('php/dw');
        $b->lockShared('php/dw'); // the semaphore is full for sgw's MAX 1
        // Waiters on raw connections: the client's own waits block.
        $raw = [];
        foreach (['iam php waiter one', 'gw -1 php/dw', 'sgw -1 1 php/dw'] as $i => $line) {
            $s = stream_socket_client('tcp://' . self::$server->addr());
            $this->assertNotFalse($s);
            fwrite($s, $line . "\n" . ($i === 0 ? "gw -1 php/dw\n" : ''));
            $raw[] = $s;
            // Each queued before the next is sent: the order is known.
            $deadline = microtime(true) + 10;
            while (count($a->waiters('php/dw')) < $i + 1 && microtime(true) < $deadline) {
                usleep(10000);
            }
        }
        $w = $a->waiters('php/dw');
        $this->assertSame(['php waiter one', false, 0], [$w[0]->waiter, $w[0]->shared, $w[0]->deadlock]);
        $this->assertSame([false, true], [$w[1]->shared, $w[2]->shared]);
        $this->assertInstanceOf(Waiter::class, $w[2]);
        $this->assertGreaterThanOrEqual(0.0, $w[2]->queued);
        $this->assertCount(3, array_filter($a->waiters(), fn (Waiter $x) => $x->lock === 'php/dw'));
        $this->assertSame([], $a->waiters('php/none'));
        foreach ($raw as $s) {
            fclose($s);
        }
        $lock->release();
    }

    public function testKill9IsSeenWithin100ms(): void
    {
        $srv = $this->server();
        $c = $this->client([], [$srv->addr()]);
        $lock = $c->lock('php/kill');
        $t0 = microtime(true);
        $srv->kill9();
        $this->assertFalse($lock->stillHeld());
        $this->assertLessThan(0.1, microtime(true) - $t0);
        $this->assertTrue($lock->isLost());
        $this->expectException(SessionLost::class);
        $lock->release();
    }

    public function testKill9DuringAWait(): void
    {
        $srv = $this->server();
        $holder = $this->client([], [$srv->addr()]);
        $holder->lock('php/killwait');
        $c = $this->client([], [$srv->addr()]);
        $t0 = null;
        try {
            $c->lock('php/killwait', null, function () use ($srv, &$t0): bool {
                if ($t0 === null) {
                    $srv->kill9();
                    $t0 = microtime(true);
                }
                return false;
            });
            $this->fail('granted');
        } catch (SessionLost) {
        }
        $this->assertLessThan(0.1, microtime(true) - $t0);
    }

    public function testSigstopIsSeenWithinTheTimeout(): void
    {
        $srv = $this->server();
        $c = $this->client(['timeout' => 1.0, 'interval' => 0.25], [$srv->addr()]);
        $lock = $c->lock('php/stop');
        $srv->stop();
        $t0 = microtime(true);
        $this->assertFalse($lock->stillHeld());
        $this->assertLessThan(2.0, microtime(true) - $t0);
    }

    public function testSigstopDuringAWait(): void
    {
        $srv = $this->server();
        $holder = $this->client([], [$srv->addr()]);
        $holder->lock('php/stopwait');
        $c = $this->client(['timeout' => 1.0, 'interval' => 0.25], [$srv->addr()]);
        $t0 = null;
        try {
            $c->lock('php/stopwait', null, function () use ($srv, $holder, &$t0): bool {
                if ($t0 === null && $this->waiters($holder, 'php/stopwait') === 1) {
                    $srv->stop();
                    $t0 = microtime(true);
                }
                return false;
            });
            $this->fail('granted');
        } catch (SessionLost $e) {
            $this->assertStringContainsString('no answer', $e->getMessage());
        }
        $this->assertLessThan(2.0, microtime(true) - $t0);
    }

    public function testFailoverToTheSecondAddress(): void
    {
        $first = $this->server();
        $second = $this->server();
        $c = $this->client([], [Server::deadAddr(), $first->addr(), $second->addr()]);
        $this->assertSame($first->addr(), $c->address());
        $lock = $c->lock('php/failover');
        $first->kill9();
        usleep(20000);
        $this->assertFalse($lock->stillHeld());
        // The next call connects again, to the next address that answers.
        $lock2 = $c->lock('php/failover', 5.0);
        $this->assertSame($second->addr(), $c->address());
        $this->assertTrue($lock2->stillHeld());
        $this->assertFalse($lock->stillHeld());
    }

    public function testAStoppedFirstAddressIsPassedOver(): void
    {
        $first = $this->server();
        $second = $this->server();
        $first->stop();
        $c = $this->client(['timeout' => 0.5], [$first->addr(), $second->addr()]);
        $this->assertSame($second->addr(), $c->address());
    }

    public function testNoAddressAnswers(): void
    {
        $this->expectException(SessionLost::class);
        new Client([Server::deadAddr(), Server::deadAddr()]);
    }

    public function testTls(): void
    {
        $srv = $this->server([], true);
        $c = $this->client(['tls' => ['cafile' => Server::certs() . '/ca.crt'], 'timeout' => 0.5, 'interval' => 0.1],
            [$srv->addr()]);
        $lock = $c->lock('php/tls', 1.0);
        $this->assertSame($lock->token(), $c->details('php/tls')[0]->token);
        // A wait longer than the timeout, kept alive by pings over TLS.
        $other = $this->client(['tls' => ['cafile' => Server::certs() . '/ca.crt']], ['tls://' . $srv->addr()]);
        try {
            $other->lock('php/tls', 1.2);
            $this->fail('granted');
        } catch (LockTimeout) {
        }
        $this->assertTrue($lock->stillHeld());
        try {
            new Client([$srv->addr()], ['tls' => true]); // the system's CAs do not know this one
            $this->fail('connected');
        } catch (SessionLost $e) {
            $this->assertStringContainsString('certificate verify failed', $e->getMessage());
        }
    }

    public function testAcl(): void
    {
        $acl = Server::aclFile([['app', 'app-token', 'lock', 'php/app/*'], ['ops', 'ops-token', 'lock,inspect', '*']]);
        $srv = $this->server(['-acl-file', $acl]);
        $c = $this->client(['token' => 'app-token'], [$srv->addr()]);
        $lock = $c->lock('php/app/x', 1.0);
        try {
            $c->lock('php/other', 1.0);
            $this->fail('granted');
        } catch (PermissionDenied $e) {
            $this->assertSame('php/other', $e->lockName());
        }
        try {
            $c->tryLock('php/other');
            $this->fail('granted');
        } catch (PermissionDenied) {
        }
        try {
            $c->details();
            $this->fail('no inspect, yet listed');
        } catch (PermissionDenied $e) {
            $this->assertNull($e->lockName());
        }
        $this->assertTrue($lock->stillHeld(), 'a refusal keeps the connection');
        $this->assertSame('app lock php/app/*', $c->perms());
        $ops = $this->client(['token' => 'ops-token'], [$srv->addr()]);
        $this->assertSame(['php/app/x' => 'app'], $ops->locks('php/app/x'));
        try {
            new Client([$srv->addr()], ['token' => 'wrong']);
            $this->fail('connected');
        } catch (AuthFailed) {
        }
        $anon = $this->client([], [$srv->addr()]);
        $this->expectException(AuthFailed::class);
        $anon->lock('php/app/y');
    }

    public function testTheTokenIsSentOnEveryConnect(): void
    {
        $acl = Server::aclFile([['app', 'app-token', 'lock', '*']]);
        $first = $this->server(['-acl-file', $acl]);
        $second = $this->server(['-acl-file', $acl]);
        $c = $this->client(['token' => 'app-token'], [$first->addr(), $second->addr()]);
        $c->lock('php/reauth');
        $first->kill9();
        usleep(20000);
        try {
            $c->me();
            $this->fail('the dead connection answered');
        } catch (SessionLost) {
        }
        $this->assertSame('app', $c->me()[1]);
        $this->assertSame($second->addr(), $c->address());
    }
}
