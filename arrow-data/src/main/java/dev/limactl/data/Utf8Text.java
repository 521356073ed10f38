package dev.limactl.data;

import java.io.BufferedInputStream;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.Reader;
import java.nio.ByteBuffer;
import java.nio.CharBuffer;
import java.nio.charset.CharsetDecoder;
import java.nio.charset.CoderResult;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * Text files read as strict UTF-8, line by line, so that invalid bytes are a {@link DataFormatException}
 * naming the file, the line and the byte ("data.csv:12: not valid UTF-8 at byte 7 of the line").
 * The JDK's decoding readers fail a buffer ahead of where the parser is, without a line, and
 * Files.readString names neither; this is the one place that decodes user text files.
 */
public final class Utf8Text {
    private Utf8Text() {}

    /** A Reader over the file's text (a leading BOM dropped); a NoSuchFileException (an IOException) when it does not exist. */
    public static Reader reader(Path path) throws IOException {
        return new LineReader(Files.newInputStream(path), path.toString());
    }

    /** A Reader over a stream's text; name (the file, an archive entry) is what errors call it. */
    public static Reader reader(InputStream in, String name) {
        return new LineReader(in, name);
    }

    /** The file's lines (without their line breaks; a "\r" before "\n" dropped, as readAllLines does). */
    public static List<String> lines(Path path) throws IOException {
        List<String> out = new ArrayList<>();
        try (LineReader r = new LineReader(Files.newInputStream(path), path.toString())) {
            for (String line; (line = r.nextLine()) != null; ) {
                String l = line.endsWith("\n") ? line.substring(0, line.length() - 1) : line;
                out.add(l.endsWith("\r") ? l.substring(0, l.length() - 1) : l);
            }
        }
        return out;
    }

    /** The whole file as a string. */
    public static String read(Path path) throws IOException {
        StringBuilder b = new StringBuilder();
        try (LineReader r = new LineReader(Files.newInputStream(path), path.toString())) {
            for (String line; (line = r.nextLine()) != null; ) b.append(line);
        }
        return b.toString();
    }

    /** Decodes bytes (a whole text) strictly, a leading BOM dropped; an invalid byte names its line in name. */
    public static String decode(byte[] bytes, String name) {
        CharsetDecoder utf8 = strictDecoder();
        StringBuilder b = new StringBuilder(bytes.length);
        int start = 0;
        long lineNo = 0;
        for (int i = 0; i <= bytes.length; i++) {
            if (i == bytes.length || bytes[i] == '\n') {
                int end = Math.min(i + 1, bytes.length);
                if (end > start) b.append(decodeLine(utf8, java.util.Arrays.copyOfRange(bytes, start, end), name, ++lineNo));
                start = end;
            }
        }
        return b.length() > 0 && b.charAt(0) == '\uFEFF' ? b.substring(1) : b.toString();
    }

    /** Decodes one line's bytes (line numbers count from 1), or says where it is not UTF-8. */
    public static String decodeLine(CharsetDecoder utf8, byte[] line, String name, long lineNo) {
        ByteBuffer in = ByteBuffer.wrap(line);
        CharBuffer out = CharBuffer.allocate(line.length);
        utf8.reset();
        CoderResult r = utf8.decode(in, out, true);
        if (!r.isError()) r = utf8.flush(out);
        if (r.isError()) {
            throw new DataFormatException(name + ":" + lineNo + ": not valid UTF-8 at byte " + (in.position() + 1) + " of the line");
        }
        return out.flip().toString();
    }

    /** A strict decoder (malformed and unmappable input are errors). */
    public static CharsetDecoder strictDecoder() {
        return StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT).onUnmappableCharacter(CodingErrorAction.REPORT);
    }

    private static final class LineReader extends Reader {
        private final String name;
        private final InputStream in;
        private final CharsetDecoder utf8 = strictDecoder();
        private final ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        private String pending = "";
        private int at;
        private long lineNo;
        private boolean eof;

        LineReader(InputStream in, String name) {
            this.name = name;
            this.in = new BufferedInputStream(in, 1 << 16);
        }

        /** The next line with its "\n" (the last may lack it), or null at the end. */
        String nextLine() throws IOException {
            if (eof) return null;
            bytes.reset();
            int b;
            while ((b = in.read()) != -1) {
                bytes.write(b);
                if (b == '\n') break;
            }
            if (b == -1) eof = true;
            if (bytes.size() == 0) return null;
            String line = decodeLine(utf8, bytes.toByteArray(), name, ++lineNo);
            return lineNo == 1 && line.startsWith("\uFEFF") ? line.substring(1) : line;
        }

        @Override
        public int read(char[] cbuf, int off, int len) throws IOException {
            if (len == 0) return 0;
            while (at >= pending.length()) {
                String next = nextLine();
                if (next == null) return -1;
                pending = next;
                at = 0;
            }
            int n = Math.min(len, pending.length() - at);
            pending.getChars(at, at + n, cbuf, off);
            at += n;
            return n;
        }

        @Override
        public void close() throws IOException {
            in.close();
        }
    }
}
