import { behaviours } from './behaviours.js';

behaviours('tcp', (d) => d.addr);
