<?php

declare(strict_types=1);

error_reporting(E_ALL);
require __DIR__ . '/../autoload.php';
spl_autoload_register(function (string $class): void {
    if (str_starts_with($class, 'Glockd\\Tests\\')) {
        require __DIR__ . '/' . substr($class, strlen('Glockd\\Tests\\')) . '.php';
    }
});
