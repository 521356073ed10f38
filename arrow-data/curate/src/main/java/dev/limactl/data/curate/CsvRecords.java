package dev.limactl.data.curate;

import dev.limactl.data.DataFormatException;
import java.io.IOException;
import java.io.Reader;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.List;
import org.apache.commons.csv.CSVFormat;
import org.apache.commons.csv.CSVParser;
import org.apache.commons.csv.CSVRecord;

/** Streams the records of a CSV with a header (RFC 4180, multi-line quoted fields), with errors that name the file and record. */
final class CsvRecords {
    interface Handler {
        void record(CSVRecord rec, CSVParser parser);
    }

    private CsvRecords() {}

    /** what names the source in "... file X does not exist"; expected describes the required columns in errors. */
    static void read(Path csv, String what, List<String> required, String expected, Handler h) {
        try (Reader r = Files.newBufferedReader(csv, StandardCharsets.UTF_8)) {
            CSVParser parser;
            try {
                parser = CSVFormat.RFC4180.builder().setHeader().setSkipHeaderRecord(true).get().parse(r);
            } catch (IllegalArgumentException | IllegalStateException | UncheckedIOException e) {  // a header commons-csv refuses
                throw new DataFormatException(csv + ": broken CSV header (expected " + expected + "): " + e.getMessage(), e);
            }
            if (!parser.getHeaderMap().keySet().containsAll(required)) {
                throw new DataFormatException(csv + ": expected columns " + expected + "; got " + parser.getHeaderNames());
            }
            var it = parser.iterator();
            while (true) {
                CSVRecord rec;
                try {
                    if (!it.hasNext()) break;
                    rec = it.next();
                } catch (UncheckedIOException | IllegalStateException e) {
                    throw new DataFormatException(csv + ": broken CSV after record " + parser.getRecordNumber() + " (line "
                            + parser.getCurrentLineNumber() + "): " + e.getMessage(), e);
                }
                h.record(rec, parser);
            }
        } catch (NoSuchFileException e) {
            throw new DataFormatException(what + " file " + csv + " does not exist", e);
        } catch (IOException e) {
            throw new DataFormatException("cannot read " + csv + ": " + e.getMessage(), e);
        }
    }
}
