import pkg from '../../package.json' with { type: 'json' };

/** The gateway's software version (package.json), in its birth and on /health. */
export const version: string = pkg.version;
