// Takes a lock, prints its token, notices when the server goes, and takes
// the lock again on the next node that answers. Written from README.md.
//
//   node examples/failover.js 127.0.0.1:9999 127.0.0.1:9997
import { Session } from 'glockd';

const addresses = process.argv.slice(2);
for (let round = 1; round <= 2; round++) {
  const session = await Session.open({ addresses, timeout: 1000, interval: 250 });
  const lock = await session.lock('example/job', { timeout: 5000 });
  console.log(`${session.address}: holding ${lock.name}, fencing token ${lock.token}`);
  if (round === 2) {
    await lock.unlock();
    await session.close();
    break;
  }
  await new Promise((resolve) => lock.lost.addEventListener('abort', resolve, { once: true }));
  console.log(`lost: ${lock.lost.reason.message}`);
}
