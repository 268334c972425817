/**
 * `work` over every item, at most `width` at a time (setup scripts and benches provisioning thousands of identities
 * against one database: a handful of writers in parallel, not thousands).
 */
export async function forEachLimited<T>(
  items: readonly T[],
  width: number,
  work: (item: T, index: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  const lane = async () => {
    while (next < items.length) {
      const i = next++;
      await work(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(width, items.length)) }, lane));
}
