<?php

// Written from the README alone: take a lock, print its token, notice when
// the server dies, and take the lock again on the next address.
//
//     php failover.php 127.0.0.1:9999 127.0.0.1:9997

declare(strict_types=1);

require __DIR__ . '/../autoload.php';

$glockd = new Glockd\Client(array_slice($argv, 1), ['timeout' => 3.0]);
$lock = $glockd->lock('demo/failover', 5.0);
echo "locked {$lock->name()} on {$glockd->address()} token {$lock->token()}\n";
while ($lock->stillHeld()) {
    usleep(50000);
}
echo "lost\n";
// The next call connects again, trying the addresses in order.
$lock = $glockd->lock('demo/failover', 5.0);
echo "locked {$lock->name()} on {$glockd->address()} token {$lock->token()}\n";
$lock->release();
