use super::UtcTime;

#[test]
fn known_dates() {
    // RFC 9110's example date: Sun, 06 Nov 1994 08:49:37 GMT.
    assert_eq!(
        UtcTime::from_unix(784_111_777),
        UtcTime {
            year: 1994,
            month: 11,
            day: 6,
            hour: 8,
            minute: 49,
            second: 37,
            weekday: 0,
        }
    );
    let epoch = UtcTime::from_unix(0);
    assert_eq!(
        (epoch.year, epoch.month, epoch.day, epoch.weekday),
        (1970, 1, 1, 4)
    );
    // A leap day.
    let leap = UtcTime::from_unix(951_782_400);
    assert_eq!((leap.year, leap.month, leap.day), (2000, 2, 29));
}
