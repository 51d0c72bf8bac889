<?php

declare(strict_types=1);

// Composer's PSR-4 autoloading without Composer: Glockd\X is src/X.php,
// Glockd\Tests\X is tests/X.php.
error_reporting(E_ALL);
spl_autoload_register(function (string $class): void {
    foreach (['Glockd\\Tests\\' => __DIR__ . '/', 'Glockd\\' => __DIR__ . '/../src/'] as $prefix => $dir) {
        if (str_starts_with($class, $prefix)) {
            $file = $dir . str_replace('\\', '/', substr($class, strlen($prefix))) . '.php';
            if (is_file($file)) {
                require $file;
            }
            return;
        }
    }
});
