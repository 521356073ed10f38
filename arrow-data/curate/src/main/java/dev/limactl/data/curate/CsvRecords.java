package dev.limactl.data.curate;

import dev.limactl.data.DataFormatException;
import dev.limactl.data.Utf8Text;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.List;
import java.util.function.Consumer;
import org.apache.commons.csv.CSVFormat;
import org.apache.commons.csv.CSVParser;
import org.apache.commons.csv.CSVRecord;

/**
 * Streams the records of a CSV with a header (RFC 4180, multi-line quoted fields), with errors that
 * name the file, the record and the line. Text is strict UTF-8 (an invalid byte names its line).
 */
final class CsvRecords {
    /** A record, its number (1 = the first after the header, counting skipped broken ones) and the line it ends on. */
    interface Handler {
        void record(CSVRecord rec, long recordNo, long line, List<String> header);
    }

    private CsvRecords() {}

    /**
     * what names the source in "... file X does not exist"; expected describes the required columns in
     * errors. A record the CSV grammar cannot parse (an unclosed quote runs to the end of the file) is
     * an error, or, with skipBroken, reported to it and skipped: parsing starts again on the line after
     * the one the broken record started on.
     */
    static void read(Path csv, String what, List<String> required, String expected, Consumer<String> skipBroken, Handler h) {
        long from = 0, recordNo = 0;  // physical lines skipped before the parser starts (0: it reads the header)
        List<String> header = null;
        while (true) {
            try (BufferedReader r = new BufferedReader(Utf8Text.reader(csv))) {
                for (long i = 0; i < from; i++) {
                    if (r.readLine() == null) return;
                }
                CSVParser parser;
                try {
                    parser = header == null ? CSVFormat.RFC4180.builder().setHeader().setSkipHeaderRecord(true).get().parse(r)
                            : CSVFormat.RFC4180.builder().setHeader(header.toArray(String[]::new)).get().parse(r);
                } catch (IllegalArgumentException | IllegalStateException | UncheckedIOException e) {  // a header commons-csv refuses
                    throw new DataFormatException(csv + ": broken CSV header (expected " + expected + "): " + e.getMessage(), e);
                }
                if (header == null) {
                    if (!parser.getHeaderMap().keySet().containsAll(required)) {
                        throw new DataFormatException(csv + ": expected columns " + expected + "; got " + parser.getHeaderNames());
                    }
                    header = parser.getHeaderNames();
                }
                var it = parser.iterator();
                boolean restart = false;
                while (true) {
                    long before = from + parser.getCurrentLineNumber();  // lines read before this record
                    CSVRecord rec;
                    try {
                        if (!it.hasNext()) break;
                        rec = it.next();
                    } catch (UncheckedIOException | IllegalStateException e) {
                        // commons-csv's own words, without the Java class names it prefixes
                        String why = String.valueOf(e.getMessage()).replaceAll("([\\w.$]+(Exception|Error): )+", "");
                        String msg = csv + ": broken CSV record " + (recordNo + 1) + " starting on line " + (before + 1) + ": " + why;
                        if (skipBroken == null) throw new DataFormatException(msg, e);
                        skipBroken.accept(msg + "; skipped, reading on from line " + (before + 2));
                        recordNo++;
                        from = before + 1;
                        restart = true;
                        break;
                    }
                    h.record(rec, ++recordNo, from + parser.getCurrentLineNumber(), header);
                }
                if (!restart) return;
            } catch (NoSuchFileException e) {
                throw new DataFormatException(what + " file " + csv + " does not exist", e);
            } catch (IOException e) {
                throw new DataFormatException("cannot read " + csv + ": " + e.getMessage(), e);
            }
        }
    }
}
