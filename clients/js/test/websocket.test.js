// Over a websocket: with the global WebSocket when Node has one (built in
// from Node 22, behind --experimental-websocket on Node 20), else, or with
// GLOCKD_JS_OWN_WEBSOCKET=1, the module's own RFC 6455 client.
import { behaviours } from './behaviours.js';

const own = process.env.GLOCKD_JS_OWN_WEBSOCKET === '1' || typeof WebSocket !== 'function';
behaviours(`websocket (${own ? 'built-in client' : 'global WebSocket'})`, (d) => d.wsURL, own ? { WebSocket: null } : {});
