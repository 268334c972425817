/**
 * A bare Aedes broker (no authentication, no persistence beyond the default in-memory one) in a process of its
 * own, so the benchmark can pin it to a core apart from the load. Prints `ready <port>` once listening; stops on
 * SIGTERM or when its parent's stdin pipe closes.
 */
import net from 'node:net';
import { Aedes } from 'aedes';

const broker = await Aedes.createBroker();
const server = net.createServer((socket) => {
  socket.setNoDelay(true);
  broker.handle(socket);
});
server.listen(Number(process.argv[2] ?? 0), '127.0.0.1', () => {
  process.stdout.write(`ready ${(server.address() as net.AddressInfo).port}\n`);
});
const stop = () => {
  server.close();
  broker.close(() => process.exit(0));
};
process.on('SIGTERM', stop);
process.stdin.on('end', stop);
process.stdin.resume();
