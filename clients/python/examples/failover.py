"""Written from the README alone: take a lock, print its token, notice when
the server dies, and take the lock again on the next address.

    python3 failover.py 127.0.0.1:9999 127.0.0.1:9997

It holds the lock until the session is lost, then takes it again (trying
the addresses in order), prints the new token and exits.
"""

import sys
import time

import glockd

addresses = sys.argv[1:]
for attempt in range(2):
    try:
        with glockd.Session(addresses, timeout=3.0) as s:
            with s.lock("demo/failover", timeout=5.0) as lk:
                print("locked", lk.name, "on", s.address, "token", lk.token, flush=True)
                if attempt == 1:
                    break
                lk.lost.wait()
                print("lost:", s.error, flush=True)
    except glockd.SessionLost as e:
        print("session lost:", e, flush=True)
        time.sleep(0.1)
else:
    sys.exit("never took the lock again")
