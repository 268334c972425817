/**
 * What the `npm run bench:*` commands share: their numeric option parser and the benchmarks page they append their
 * runs to, one section each.
 */
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { InvalidArgumentError } from '@commander-js/extra-typings';
import * as prettier from 'prettier';

export const repoRoot = path.resolve(import.meta.dirname, '..', '..');
/** Where the benches append their runs by default. */
export const BENCHMARKS_DOC = path.join(repoRoot, 'docs', 'benchmarks.md');

/** A commander option parser for a number from `min` to `max`. */
export function inRange(min: number, max: number) {
  return (value: string) => {
    const n = Number(value);
    if (!Number.isFinite(n) || n < min || n > max) throw new InvalidArgumentError(`a number from ${min} to ${max}`);
    return n;
  };
}

/**
 * Appends `run` at the end of `section` (its `## ` heading line) in the Markdown file, adding the section with
 * `sectionIntro` (which starts with that heading) at the end if it is missing, and the file if it does not exist.
 * Formatted as `npm run format:check` expects (tables aligned).
 */
export async function appendToSection(file: string, section: string, sectionIntro: string, run: string): Promise<void> {
  let doc = existsSync(file)
    ? await readFile(file, 'utf8')
    : '# Benchmarks\n\nEach section belongs to one benchmark; each run is appended by it with the command, the date and the machine.\n';
  if (!doc.includes(`\n${section}\n`)) doc = `${doc.trimEnd()}\n\n${sectionIntro}\n`;
  const at = doc.indexOf(`\n${section}\n`) + 1;
  const next = doc.indexOf('\n## ', at + section.length);
  const end = next === -1 ? doc.length : next + 1;
  const before = doc.slice(0, end).trimEnd();
  const after = doc.slice(end);
  const text = `${before}\n\n${run.trim()}\n${after ? `\n${after}` : ''}`;
  const options = (await prettier.resolveConfig(file)) ?? {};
  await writeFile(file, await prettier.format(text, { ...options, filepath: file }));
}
