#!/usr/bin/env node
'use strict';
/*
 * Builds the MongoDB-compatible server used in development and tests (mongo-java-server, see tools/mongo-stand-in):
 *   1. `mvn dependency:copy-dependencies` into .cache/mongo-stand-in/lib — only when the jars are missing or pom.xml
 *      changed (measured with an empty ~/.m2: 22 s on one day, 5.6 s on another; 2.6 s with a warm one);
 *   2. `javac` of src/Launcher.java into .cache/mongo-stand-in/classes — only when the source or the jars changed.
 *      Compiled once rather than run in source-file mode, which costs 3 s and 110 MiB on every start.
 * Each step builds into a fresh temporary folder and renames it into place, so a run interrupted half-way, or two
 * runs at once (npm start beside npm test), never leave a half-filled folder that looks complete.
 *
 * Plain CommonJS with built-ins only: it runs on the machine's Node 20 (npm's pre-scripts) as well as on Node 24.
 * Usage: node scripts/bootstrap/mongo-stand-in.cjs   (prints the classpath and the main class)
 */
const fs = require('node:fs');
const path = require('node:path');
const { findExecutable, run, sha256 } = require('./shell.cjs');

const MAIN_CLASS = 'nxg.Launcher';
const STAMP = '.stamp.json';

/**
 * @param {string} rootDir the repository root
 * @param {(message: string) => void} [log]
 * @returns {{ classpath: string, mainClass: string }}
 */
function ensureMongoStandIn(rootDir, log) {
  const say = typeof log === 'function' ? log : () => {};
  const pom = path.join(rootDir, 'tools', 'mongo-stand-in', 'pom.xml');
  const source = path.join(rootDir, 'tools', 'mongo-stand-in', 'src', 'Launcher.java');
  const cacheDir = path.join(rootDir, '.cache', 'mongo-stand-in');
  const libDir = path.join(cacheDir, 'lib');
  const classesDir = path.join(cacheDir, 'classes');
  for (const file of [pom, source]) {
    if (!fs.existsSync(file)) throw new Error(`mongo stand-in: ${path.relative(rootDir, file)} is missing`);
  }
  // java is what runs the stand-in: check it even when nothing needs building.
  requireTool('java');

  const pomHash = sha256(fs.readFileSync(pom));
  const libStamp = readStamp(libDir);
  const libFresh =
    libStamp !== null &&
    libStamp.pom === pomHash &&
    Array.isArray(libStamp.jars) &&
    libStamp.jars.length > 0 &&
    libStamp.jars.every((jar) => fs.existsSync(path.join(libDir, jar)));
  if (!libFresh) {
    say('mongo stand-in: fetching mongo-java-server jars with Maven (5-25 s the first time)');
    const started = Date.now();
    const mvn = requireTool('mvn');
    buildInto(libDir, (tmp) => {
      run(
        mvn,
        ['-q', '-B', 'dependency:copy-dependencies', `-DoutputDirectory=${tmp}`, '-DincludeScope=runtime', '-f', pom],
        { capture: true, label: 'mongo stand-in' },
      );
      const jars = fs.readdirSync(tmp).filter((name) => name.endsWith('.jar'));
      if (jars.length === 0) throw new Error(`mongo stand-in: Maven copied no jars into ${tmp}`);
      return { pom: pomHash, jars: jars.sort() };
    });
    say(`mongo stand-in: jars ready in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  }

  // The jars' identity is part of the key: new library versions may change the APIs the launcher calls.
  const classesKey = sha256(fs.readFileSync(source), `\0${pomHash}`);
  const classesStamp = readStamp(classesDir);
  const classesFresh =
    classesStamp !== null &&
    classesStamp.source === classesKey &&
    fs.existsSync(path.join(classesDir, ...MAIN_CLASS.split('.')) + '.class');
  if (!classesFresh) {
    say('mongo stand-in: compiling the launcher');
    const javac = requireTool('javac');
    buildInto(classesDir, (tmp) => {
      // javac expands the `lib/*` wildcard itself; no shell is involved. --release pins the class-file level.
      run(javac, ['--release', '17', '-encoding', 'UTF-8', '-d', tmp, '-cp', path.join(libDir, '*'), source], {
        capture: true,
        label: 'mongo stand-in',
      });
      return { source: classesKey };
    });
  }

  return { classpath: `${classesDir}${path.delimiter}${path.join(libDir, '*')}`, mainClass: MAIN_CLASS };
}

/** Fills a temporary sibling of `dir`, writes its stamp, then swaps it in with renames. */
function buildInto(dir, fill) {
  fs.mkdirSync(path.dirname(dir), { recursive: true });
  const tmp = `${dir}.tmp-${process.pid}-${Date.now()}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp);
  try {
    const stamp = fill(tmp);
    fs.writeFileSync(path.join(tmp, STAMP), `${JSON.stringify(stamp)}\n`);
    const old = `${dir}.old-${process.pid}-${Date.now()}`;
    try {
      fs.renameSync(dir, old);
    } catch (err) {
      if (err.code !== 'ENOENT') throw err;
    }
    try {
      fs.renameSync(tmp, dir);
    } catch (err) {
      // Another run swapped its own build in between our two renames: theirs is as good as ours.
      if (!fs.existsSync(dir)) throw err;
    }
    fs.rmSync(old, { recursive: true, force: true });
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

function readStamp(dir) {
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, STAMP), 'utf8'));
  } catch {
    return null;
  }
}

const DEBIAN_PACKAGE = { java: 'openjdk-17-jre-headless', javac: 'openjdk-17-jdk-headless', mvn: 'maven' };

/** Finds a tool on PATH without running it (java -version costs ~50 ms, mvn -v ~300 ms), or fails loudly. */
function requireTool(name) {
  const found = findExecutable(name);
  if (found) return found;
  throw new Error(
    `mongo stand-in: \`${name}\` is not on PATH. The MongoDB-compatible server needs Java 17 and Maven: ` +
      `apt-get install -y ${DEBIAN_PACKAGE[name]} (or set MONGO_URL to an existing MongoDB).`,
  );
}

/** CLI: builds what is missing and prints how to run it. */
function main() {
  const rootDir = path.resolve(__dirname, '..', '..');
  try {
    const { classpath, mainClass } = ensureMongoStandIn(rootDir, (msg) => process.stderr.write(`${msg}\n`));
    process.stdout.write(`classpath: ${classpath}\nmain class: ${mainClass}\n`);
  } catch (err) {
    process.stderr.write(`${err && err.message ? err.message : String(err)}\n`);
    process.exitCode = 1;
  }
}

exports.ensureMongoStandIn = ensureMongoStandIn;
exports.main = main;

if (require.main === module) main();
