"""Runs examples/failover.py, written from the README alone, against two
daemons, and kills the first under it."""

import os
import subprocess
import sys
import unittest

from harness import Server

EXAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "failover.py")


class ExampleTest(unittest.TestCase):
    def test_failover_example(self):
        first, second = Server(), Server()
        self.addCleanup(first.close)
        self.addCleanup(second.close)
        p = subprocess.Popen([sys.executable, EXAMPLE, first.addr, second.addr],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(p.kill)
        line = p.stdout.readline()
        self.assertRegex(line, r"^locked demo/failover on %s token [1-9][0-9]*\n$" % first.addr)
        token1 = int(line.split()[-1])
        first.kill9()
        out, err = p.communicate(timeout=30)
        self.assertEqual(p.returncode, 0, err)
        lines = out.splitlines()
        self.assertTrue(lines[0].startswith("lost: "), out)
        self.assertIn("session lost:", lines[1])  # the with-block's release says so
        self.assertRegex(lines[2], r"^locked demo/failover on %s token [1-9][0-9]*$" % second.addr)
        self.assertNotEqual(int(lines[2].split()[-1]), token1)


if __name__ == "__main__":
    unittest.main()
