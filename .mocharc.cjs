'use strict';
// Mocha runs the .ts tests directly on Node 24 (type stripping): no build step, no loader.
module.exports = {
  spec: ['{cloud,edge-gateway,protocol,simulators,tools,scripts}/**/*.test.ts', 'test/**/*.test.ts'],
  extension: ['ts'],
  require: ['test/helpers/root-hooks.ts'],
  timeout: 20000,
  slow: 1000,
  // No `exit: true`: the run ends by itself once every test closed what it opened. A handle left open no longer
  // hangs CI nor goes unnoticed: root-hooks.ts prints what keeps the process alive 30 s after the run and fails it.
};
