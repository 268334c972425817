/**
 * Readers: anything that turns a presented credential into a scan `{reader, credential}`. Sources: line readers
 * (QR scanners as keyboard wedge or serial, line-reader.ts), PC/SC NFC readers (G3's adapter in ./nfc, mapped from
 * PC/SC reader names to reader ids in local configuration), and machines' own cameras and NFC pads (their
 * `qr-scanned` / `nfc-tapped` events, which become link/unlink at that machine).
 */
import type { Credential, CredentialKind, ReaderId } from '../../../protocol/index.ts';

export interface ReaderScan {
  readonly reader: ReaderId;
  readonly credential: Credential;
  /** Gateway clock when the credential was read, ms. */
  readonly atMs: number;
}

export interface ReaderStatus {
  readonly reader: ReaderId;
  readonly kind: CredentialKind;
  readonly connected: boolean;
  readonly detail?: string;
}
