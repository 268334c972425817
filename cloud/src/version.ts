import pkg from '../../package.json' with { type: 'json' };

/** The release version, from package.json: reported by /health, /api and the OpenAPI document. */
export const version: string = pkg.version;
