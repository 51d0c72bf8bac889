import { behaviours } from './behaviours.js';

behaviours('unix', (d) => d.unix);
