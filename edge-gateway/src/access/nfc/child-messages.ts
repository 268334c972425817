/**
 * What the NFC child process (nfc-child.ts) tells the gateway over its IPC channel. nfc-pcsc runs in that child
 * because a broken PC/SC service can block its thread in native code (see nfc-readers.ts); the gateway only
 * receives these messages.
 */
export type ChildMessage =
  /** `new NFC()` returned: the PC/SC context is established. */
  | { readonly type: 'ready' }
  /** Sent every heartbeat interval while the child's event loop turns. */
  | { readonly type: 'alive' }
  | { readonly type: 'reader'; readonly name: string }
  | { readonly type: 'reader-end'; readonly name: string }
  /** A card was put on a reader: its UID (lowercase hex) and, when it carries one, its token (see ndef.ts). */
  | {
      readonly type: 'card';
      readonly readerName: string;
      readonly uid: string;
      readonly token?: string;
      /** Why no token was read (a card without one says so too); for debug logs. */
      readonly noToken?: string;
    }
  /** The card of an earlier `card` message (same UID) was taken away; sent after that `card` message. */
  | { readonly type: 'card-off'; readonly readerName: string; readonly uid: string }
  | { readonly type: 'reader-error'; readonly readerName: string; readonly message: string }
  /** The PC/SC context failed (pcscd stopped, …): the child is done and the gateway starts another. */
  | { readonly type: 'pcsc-error'; readonly message: string };

/** What the gateway tells the child. */
export type ParentMessage = { readonly type: 'close' };

export function isChildMessage(value: unknown): value is ChildMessage {
  return typeof value === 'object' && value !== null && typeof (value as { type?: unknown }).type === 'string';
}
