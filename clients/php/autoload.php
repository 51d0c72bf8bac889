<?php

declare(strict_types=1);

// For use without Composer: require this file, and Glockd\X loads src/X.php.
// (With Composer, vendor/autoload.php does the same from composer.json.)
spl_autoload_register(function (string $class): void {
    if (str_starts_with($class, 'Glockd\\')) {
        $file = __DIR__ . '/src/' . str_replace('\\', '/', substr($class, strlen('Glockd\\'))) . '.php';
        if (is_file($file)) {
            require $file;
        }
    }
});
