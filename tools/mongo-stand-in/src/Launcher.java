package nxg;

import de.bwaldvogel.mongo.MongoBackend;
import de.bwaldvogel.mongo.MongoServer;
import de.bwaldvogel.mongo.MongoVersion;
import de.bwaldvogel.mongo.backend.h2.H2Backend;
import de.bwaldvogel.mongo.backend.memory.MemoryBackend;

import java.io.IOException;
import java.io.InputStream;
import java.net.InetSocketAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

/**
 * Starts mongo-java-server as the project's MongoDB stand-in (see docs: "The MongoDB-compatible server used here").
 *
 * <pre>
 * java -Xmx256m -cp 'classes:lib/*' nxg.Launcher (--memory | --h2 FILE) [--port N] [--exit-on-stdin-eof]
 * </pre>
 *
 * Prints exactly one line, {@code mongo-stand-in ready 127.0.0.1:PORT}, on stdout once the socket is bound; everything
 * else goes to stderr. Exit codes: 0 clean stop, 1 start-up failure (bind, H2 file), 2 bad arguments; 143 after
 * SIGTERM is a clean stop too.
 */
public final class Launcher {

    private static final String HOST = "127.0.0.1";

    /** Node driver 7 refuses servers below wire version 9; mongo-java-server reports 8 by default. */
    private static final MongoVersion MONGO_7_0 = new MongoVersion() {
        @Override
        public List<Integer> getVersionArray() {
            return List.of(7, 0, 0);
        }

        @Override
        public int getWireVersion() {
            return 21;
        }
    };

    /** H2 commits every 1,000 ms by default: a kill -9 lost up to ~1 s of acknowledged writes; 20 ms lost none. */
    private static final int H2_AUTO_COMMIT_DELAY_MS = 20;

    private Launcher() {
    }

    public static void main(String[] args) {
        // Must be set before any slf4j logger exists, i.e. before the first mongo-java-server class is touched.
        if (System.getProperty("org.slf4j.simpleLogger.defaultLogLevel") == null) {
            System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
        }

        Options options;
        try {
            options = Options.parse(args);
        } catch (IllegalArgumentException e) {
            System.err.println("mongo-stand-in: " + e.getMessage());
            System.err.println("usage: nxg.Launcher (--memory | --h2 FILE) [--port N] [--exit-on-stdin-eof]");
            System.exit(2);
            return;
        }

        MongoBackend backend;
        try {
            backend = openBackend(options);
        } catch (Exception e) {
            System.err.println("mongo-stand-in: cannot open storage " + options.describeStorage() + ": " + e);
            System.exit(1);
            return;
        }
        backend.version(MONGO_7_0);

        MongoServer server = new MongoServer(backend);
        InetSocketAddress address;
        try {
            server.bind(HOST, options.port);
            address = server.getLocalAddress();
        } catch (Exception e) {
            // netty rethrows its checked BindException undeclared, so MongoServer.bind's own cleanup (RuntimeException
            // only) never runs and its non-daemon event-loop threads kept the JVM alive on "Address already in use":
            // the parent waited forever. Close the backend (the H2 file) ourselves and exit.
            System.err.println("mongo-stand-in: cannot bind " + HOST + ":" + options.port + ": " + e);
            closeQuietly(backend);
            System.exit(1);
            return;
        }

        // SIGTERM / SIGINT / System.exit: close client connections, then the backend (H2 commits and closes its file).
        Runtime.getRuntime().addShutdownHook(new Thread(server::shutdownNow, "mongo-stand-in-shutdown"));

        if (options.exitOnStdinEof) {
            watchStdin();
        }

        System.out.println("mongo-stand-in ready " + HOST + ":" + address.getPort());
        System.out.flush();
    }

    private static void closeQuietly(MongoBackend backend) {
        try {
            backend.close();
        } catch (RuntimeException e) {
            System.err.println("mongo-stand-in: closing the backend failed: " + e);
        }
    }

    private static MongoBackend openBackend(Options options) throws IOException {
        if (options.h2File == null) {
            return new MemoryBackend();
        }
        Path file = Path.of(options.h2File).toAbsolutePath();
        Path parent = file.getParent();
        if (parent != null) {
            Files.createDirectories(parent);
        }
        H2Backend backend = new H2Backend(file.toString());
        backend.getMvStore().setAutoCommitDelay(H2_AUTO_COMMIT_DELAY_MS);
        return backend;
    }

    /**
     * The parent keeps our stdin open for as long as it lives; EOF means it is gone (a second guard beside the
     * parent-death signal, which is per thread and does not survive every way of being started).
     */
    private static void watchStdin() {
        Thread watcher = new Thread(() -> {
            byte[] buffer = new byte[256];
            try (InputStream in = System.in) {
                while (in.read(buffer) >= 0) {
                    // Input is ignored: only EOF matters.
                }
            } catch (IOException e) {
                // A broken stdin is as good as EOF.
            }
            System.exit(0);
        }, "mongo-stand-in-stdin-watch");
        watcher.setDaemon(true);
        watcher.start();
    }

    private static final class Options {
        String h2File;
        boolean memory;
        int port = 0;
        boolean exitOnStdinEof;

        String describeStorage() {
            return h2File == null ? "memory" : "h2 file " + h2File;
        }

        static Options parse(String[] args) {
            Options options = new Options();
            for (int i = 0; i < args.length; i++) {
                String arg = args[i];
                switch (arg) {
                    case "--memory" -> options.memory = true;
                    case "--h2" -> options.h2File = value(args, ++i, arg);
                    case "--port" -> options.port = port(value(args, ++i, arg));
                    case "--exit-on-stdin-eof" -> options.exitOnStdinEof = true;
                    default -> throw new IllegalArgumentException("unknown argument " + arg);
                }
            }
            if (options.memory == (options.h2File != null)) {
                throw new IllegalArgumentException("give exactly one of --memory and --h2 FILE");
            }
            return options;
        }

        private static String value(String[] args, int index, String flag) {
            if (index >= args.length || args[index].isEmpty()) {
                throw new IllegalArgumentException(flag + " needs a value");
            }
            return args[index];
        }

        private static int port(String text) {
            try {
                int port = Integer.parseInt(text);
                if (port < 0 || port > 65535) {
                    throw new NumberFormatException();
                }
                return port;
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException("--port must be 0..65535, got " + text);
            }
        }
    }
}
