//! Ethernet/IPv4 frames on the TAP link: the codec between the host's IP stack
//! and the middleware.
//!
//! Owns no state. Consumes raw Ethernet frames read from the TAP
//! ([`parse_tap_frame`]) and IPv4 packets received from the overlay
//! ([`validate_ipv4_multicast_packet`], [`write_multicast_frame`]); emits
//! borrowed views ([`TapFrame`]), small owned IGMP messages ([`IgmpMessage`])
//! and complete Ethernet frames written into a caller-owned `BytesMut`
//! (multicast data and the querier's IGMP queries, [`build_igmp_query`]).
//!
//! Parsing and header serialisation are etherparse's (which covers IGMPv3);
//! this module decides what a multicast bridge must do with each frame:
//!
//! - RFC 1112 §6.4: group MAC = `01:00:5e` + low 23 bits of the group.
//! - RFC 2236 §2 (IGMPv2 message format, v1 compatibility in §4) and
//!   RFC 3376 §4 (IGMPv3 query §4.1 incl. the Max Resp Code / QQIC float
//!   encoding §4.1.1 and §4.1.7, report and group records §4.2). Checksums are
//!   verified on receipt (RFC 3376 §4.1.2) and computed on send; unknown IGMP
//!   types and group record types are passed up as "ignore"
//!   (RFC 3376 §4 / §4.2.12: silently ignored).
//! - RFC 2113: IP Router Alert option on every IGMP message we send; with
//!   TTL 1 (RFC 3376 §4, RFC 2236 §2).
//! - RFC 5771 / RFC 3376 §9: 224.0.0.0/24 is link-local; nothing addressed
//!   there is ever carried over the overlay or injected from it.
//!
//! Nothing here panics on input or allocates more than the input justifies:
//! the only allocations are the spill of the small vectors holding a v3
//! report's group records and sources, bounded by the frame length.

use std::net::Ipv4Addr;

use bytes::BytesMut;
use etherparse::err::ipv4::{HeaderError, HeaderSliceError};
use etherparse::igmp::{
    GroupAddress, MaxResponseCode, MembershipQueryType, MembershipQueryWithSourcesHeader,
    ReportGroupRecordType,
};
use etherparse::{
    EtherType, Ethernet2Header, Ethernet2Slice, IgmpHeader, IgmpSlice, IgmpType, IpDscp, IpEcn,
    IpFragOffset, IpNumber, Ipv4Header, Ipv4HeaderSlice, checksum::Sum16BitWords,
};
use smallvec::SmallVec;

use crate::time::Duration;

/// Source MAC of every frame we write into the TAP: a fixed, locally
/// administered unicast address (the "router" the host sees on the link).
pub const ROUTER_MAC: [u8; 6] = [0x02, 0xa1, 0xa1, 0x00, 0x00, 0x01];

/// All-systems group, destination of general queries (RFC 2236 §2.1).
pub const ALL_SYSTEMS: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 1);
/// All-routers group, destination of IGMPv2 leaves (RFC 2236 §3).
pub const ALL_ROUTERS: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 2);
/// All IGMPv3-capable multicast routers, destination of v3 reports (RFC 3376 §4.2.14).
pub const ALL_IGMPV3_ROUTERS: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 22);

/// IP Router Alert option (RFC 2113): type 148, length 4, value 0.
const ROUTER_ALERT: [u8; 4] = [0x94, 0x04, 0x00, 0x00];
const ETHERNET_HEADER_LEN: usize = Ethernet2Header::LEN;
/// Our IGMP packets: 20-byte header + 4-byte Router Alert option.
const IGMP_IP_HEADER_LEN: usize = Ipv4Header::MIN_LEN + ROUTER_ALERT.len();

/// IGMP version the querier speaks on the link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum IgmpVersion {
    /// RFC 2236. 8-byte queries with Max Resp Time in tenths of a second.
    V2,
    /// RFC 3376 (the Linux default). 12-byte queries with QRV and QQIC.
    #[default]
    V3,
}

/// Frame-level failure: the bytes are not what their headers claim. The caller
/// counts it and drops the frame; it never reaches the overlay or the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("{layer} truncated: need {required} bytes, have {len}")]
    Truncated {
        layer: Layer,
        required: usize,
        len: usize,
    },
    #[error("IP version {0} where IPv4 was expected")]
    NotIpv4(u8),
    #[error("IPv4 IHL {0} is below the minimum of 5")]
    BadIhl(u8),
    #[error(
        "IPv4 total length {total_len} inconsistent with header length {header_len} or data length {len}"
    )]
    BadTotalLen {
        total_len: usize,
        header_len: usize,
        len: usize,
    },
    #[error("IPv4 header checksum mismatch")]
    BadIpChecksum,
    #[error("IGMP checksum mismatch")]
    BadIgmpChecksum,
    #[error("destination {0} is not a multicast group")]
    NotMulticast(Ipv4Addr),
    #[error("destination {0} is link-local (224.0.0.0/24) and never crosses the overlay")]
    LinkLocalGroup(Ipv4Addr),
    #[error("TTL is 0")]
    TtlExpired,
    #[error("source {0} is not a valid unicast source")]
    MartianSource(Ipv4Addr),
    #[error("IGMP packet from the overlay would be injected into the host")]
    IgmpFromOverlay,
}

/// Which header a [`FrameError::Truncated`] was cut in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layer {
    Ethernet,
    Ipv4Header,
    Ipv4Packet,
    Igmp,
}

impl core::fmt::Display for Layer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Layer::Ethernet => "Ethernet header",
            Layer::Ipv4Header => "IPv4 header",
            Layer::Ipv4Packet => "IPv4 packet",
            Layer::Igmp => "IGMP message",
        })
    }
}

/// Why a well-formed frame is dropped quietly (not an error: the host sends
/// these all the time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IgnoreReason {
    /// ARP, IPv6 (MLD, ND), VLAN-tagged or anything else that is not IPv4.
    NotIpv4 { ether_type: u16 },
    /// IPv4 to a unicast or broadcast address: not ours to bridge.
    NotMulticast(Ipv4Addr),
    /// Data to 224.0.0.0/24 (mDNS, LLMNR, ...): link-local, never forwarded.
    LinkLocalGroup(Ipv4Addr),
    /// Multicast data with TTL 0 (the host should never send it).
    TtlExpired,
    /// A fragment of an IGMP message. IGMP messages are tiny and never
    /// fragmented by real stacks; we do not reassemble.
    FragmentedIgmp,
    /// IGMP type we do not know (DVMRP, PIMv1, mtrace, ...): RFC 3376 §4 says
    /// silently ignore.
    UnknownIgmpType(u8),
}

/// One frame read from the TAP, classified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TapFrame<'a> {
    /// An IGMP message from the host, for the querier.
    Igmp {
        /// IPv4 source (the host's address, or 0.0.0.0 before it has one).
        src: Ipv4Addr,
        /// IPv4 destination (224.0.0.22 for v3 reports, the group for v2).
        dst: Ipv4Addr,
        msg: IgmpMessage,
    },
    /// Multicast data to a forwardable group (not 224.0.0.0/24).
    ///
    /// Fragments are passed through like whole datagrams: the overlay is one
    /// virtual link, every fragment is an ordinary IPv4 packet addressed to
    /// the group, and the receivers' stacks reassemble. Dropping them would
    /// silently break every application whose datagrams exceed the TAP MTU.
    Multicast {
        src: Ipv4Addr,
        group: Ipv4Addr,
        ttl: u8,
        /// The whole IPv4 packet, untouched (Ethernet padding trimmed by the
        /// IPv4 total length), borrowed from the input frame.
        packet: &'a [u8],
    },
    /// Something a bridge drops quietly.
    Ignored(IgnoreReason),
}

/// An IGMP message, decoded into owned values (small: a v3 report with up to
/// two records, each with up to two sources, does not allocate).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IgmpMessage {
    /// Membership query, v1, v2 or v3 (RFC 2236 §2, RFC 3376 §4.1).
    Query(Query),
    /// IGMPv1 membership report, type 0x12 (RFC 1112 appendix I).
    ReportV1 { group: Ipv4Addr },
    /// IGMPv2 membership report, type 0x16 (RFC 2236 §2).
    ReportV2 { group: Ipv4Addr },
    /// IGMPv2 leave group, type 0x17 (RFC 2236 §3).
    LeaveV2 { group: Ipv4Addr },
    /// IGMPv3 membership report, type 0x22 (RFC 3376 §4.2).
    ReportV3 { records: SmallVec<[GroupRecord; 2]> },
}

/// A membership query as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// `None` for a general query (group field 0.0.0.0).
    pub group: Option<Ipv4Addr>,
    /// Max Resp Time (zero in an IGMPv1 query).
    pub max_resp: Duration,
    /// IGMPv3 fields, `None` for an 8-byte v1/v2 query.
    pub v3: Option<V3QueryFields>,
    /// Sources of a group-and-source-specific v3 query.
    pub sources: SmallVec<[Ipv4Addr; 2]>,
}

impl Query {
    /// The query's version by RFC 3376 §7.1: length >= 12 is v3, an 8-byte
    /// query with Max Resp Code 0 is v1, otherwise v2.
    pub fn version(&self) -> u8 {
        if self.v3.is_some() {
            3
        } else if self.max_resp == Duration::ZERO {
            1
        } else {
            2
        }
    }
}

/// The IGMPv3-only fields of a query (RFC 3376 §4.1.5 - §4.1.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct V3QueryFields {
    /// S flag: suppress router-side processing.
    pub suppress_router_processing: bool,
    /// Querier's Robustness Variable (0 means "more than 7").
    pub qrv: u8,
    /// Querier's Query Interval (decoded QQIC).
    pub qqi: Duration,
}

impl Default for V3QueryFields {
    /// RFC 3376 §8 defaults: robustness 2, query interval 125 s.
    fn default() -> Self {
        V3QueryFields {
            suppress_router_processing: false,
            qrv: 2,
            qqi: Duration::from_secs(125),
        }
    }
}

/// Group record type of an IGMPv3 report (RFC 3376 §4.2.12).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GroupRecordType {
    /// 1: current state, INCLUDE(sources).
    ModeIsInclude,
    /// 2: current state, EXCLUDE(sources).
    ModeIsExclude,
    /// 3: filter mode change to INCLUDE(sources); `TO_IN({})` is a leave.
    ChangeToInclude,
    /// 4: filter mode change to EXCLUDE(sources); `TO_EX({})` is a join.
    ChangeToExclude,
    /// 5: source list change, ALLOW(sources).
    AllowNewSources,
    /// 6: source list change, BLOCK(sources).
    BlockOldSources,
    /// Unknown value: the record must be ignored (RFC 3376 §4.2.12).
    Unknown(u8),
}

impl From<u8> for GroupRecordType {
    fn from(v: u8) -> Self {
        match ReportGroupRecordType(v) {
            ReportGroupRecordType::MODE_IS_INCLUDE => GroupRecordType::ModeIsInclude,
            ReportGroupRecordType::MODE_IS_EXCLUDE => GroupRecordType::ModeIsExclude,
            ReportGroupRecordType::CHANGE_TO_INCLUDE_MODE => GroupRecordType::ChangeToInclude,
            ReportGroupRecordType::CHANGE_TO_EXCLUDE_MODE => GroupRecordType::ChangeToExclude,
            ReportGroupRecordType::ALLOW_NEW_SOURCES => GroupRecordType::AllowNewSources,
            ReportGroupRecordType::BLOCK_OLD_SOURCES => GroupRecordType::BlockOldSources,
            ReportGroupRecordType(other) => GroupRecordType::Unknown(other),
        }
    }
}

/// One group record of an IGMPv3 report (auxiliary data is skipped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupRecord {
    pub record_type: GroupRecordType,
    pub group: Ipv4Addr,
    pub sources: SmallVec<[Ipv4Addr; 2]>,
}

/// 224.0.0.0/24: local network control block, never forwarded (RFC 5771 §4).
pub fn is_link_local_group(addr: Ipv4Addr) -> bool {
    let [a, b, c, _] = addr.octets();
    a == 224 && b == 0 && c == 0
}

/// A multicast group that may cross the overlay: 224.0.0.0/4 minus 224.0.0.0/24.
pub fn is_forwardable_group(addr: Ipv4Addr) -> bool {
    addr.is_multicast() && !is_link_local_group(addr)
}

/// Ethernet address of an IPv4 group: `01:00:5e` followed by the low 23 bits
/// of the group address (RFC 1112 §6.4).
pub fn group_mac(group: Ipv4Addr) -> [u8; 6] {
    let [_, b, c, d] = group.octets();
    [0x01, 0x00, 0x5e, b & 0x7f, c, d]
}

/// Classifies one Ethernet frame read from the TAP (no FCS, no packet-info
/// header: `IFF_TAP | IFF_NO_PI`).
///
/// Bytes after the IPv4 total length (Ethernet padding) are ignored; fewer
/// bytes than it claims is [`FrameError::Truncated`]. The IPv4 header
/// checksum and, for IGMP, the IGMP checksum are verified.
pub fn parse_tap_frame(frame: &[u8]) -> Result<TapFrame<'_>, FrameError> {
    let eth = Ethernet2Slice::from_slice_without_fcs(frame).map_err(|e| FrameError::Truncated {
        layer: Layer::Ethernet,
        required: e.required_len,
        len: e.len,
    })?;
    let ether_type = eth.ether_type();
    if ether_type != EtherType::IPV4 {
        return Ok(TapFrame::Ignored(IgnoreReason::NotIpv4 {
            ether_type: ether_type.0,
        }));
    }
    let ip = Ipv4View::parse(eth.payload_slice())?;
    let src = ip.header.source_addr();
    let dst = ip.header.destination_addr();

    if ip.header.protocol() == IpNumber::IGMP {
        if ip.header.is_fragmenting_payload() {
            return Ok(TapFrame::Ignored(IgnoreReason::FragmentedIgmp));
        }
        return Ok(match parse_igmp(ip.payload)? {
            Ok(msg) => TapFrame::Igmp { src, dst, msg },
            Err(reason) => TapFrame::Ignored(reason),
        });
    }
    if !dst.is_multicast() {
        return Ok(TapFrame::Ignored(IgnoreReason::NotMulticast(dst)));
    }
    if is_link_local_group(dst) {
        return Ok(TapFrame::Ignored(IgnoreReason::LinkLocalGroup(dst)));
    }
    let ttl = ip.header.ttl();
    if ttl == 0 {
        return Ok(TapFrame::Ignored(IgnoreReason::TtlExpired));
    }
    Ok(TapFrame::Multicast {
        src,
        group: dst,
        ttl,
        packet: ip.packet,
    })
}

/// Checks an IPv4 packet received from the overlay before it may be injected
/// into the host: well-formed header with a valid checksum, total length equal
/// to the slice length, destination a forwardable group (multicast, not
/// 224.0.0.0/24), TTL >= 1, a plausible unicast source, and not IGMP.
///
/// IGMP is refused because an IGMP message injected into the host would
/// tamper with its membership state (an IGMPv2 host that hears another
/// report for its group suppresses its own, so a forged report would let our
/// querier time the group out). Returns `(source, group, ttl)`.
pub fn validate_ipv4_multicast_packet(
    packet: &[u8],
) -> Result<(Ipv4Addr, Ipv4Addr, u8), FrameError> {
    let ip = Ipv4View::parse(packet)?;
    if ip.packet.len() != packet.len() {
        return Err(FrameError::BadTotalLen {
            total_len: ip.packet.len(),
            header_len: ip.header.slice().len(),
            len: packet.len(),
        });
    }
    let src = ip.header.source_addr();
    let group = ip.header.destination_addr();
    if !group.is_multicast() {
        return Err(FrameError::NotMulticast(group));
    }
    if is_link_local_group(group) {
        return Err(FrameError::LinkLocalGroup(group));
    }
    let ttl = ip.header.ttl();
    if ttl == 0 {
        return Err(FrameError::TtlExpired);
    }
    if src.is_multicast() || src.is_broadcast() || src.is_loopback() {
        return Err(FrameError::MartianSource(src));
    }
    if ip.header.protocol() == IpNumber::IGMP {
        return Err(FrameError::IgmpFromOverlay);
    }
    Ok((src, group, ttl))
}

/// Validates `packet` with [`validate_ipv4_multicast_packet`] and appends an
/// Ethernet frame carrying it to `out`: destination the group MAC, source
/// [`ROUTER_MAC`], ethertype IPv4, then the packet bytes unchanged (so its
/// IPv4 checksum stays valid).
///
/// This is the one copy on the receive path: the payload travels from the
/// overlay datagram to here as a shared `Bytes`, and is copied once, into the
/// TAP write buffer. On error nothing is written to `out`.
pub fn write_multicast_frame(packet: &[u8], out: &mut BytesMut) -> Result<(), FrameError> {
    let (_src, group, _ttl) = validate_ipv4_multicast_packet(packet)?;
    let eth = Ethernet2Header {
        source: ROUTER_MAC,
        destination: group_mac(group),
        ether_type: EtherType::IPV4,
    };
    out.reserve(ETHERNET_HEADER_LEN + packet.len());
    out.extend_from_slice(&eth.to_bytes());
    out.extend_from_slice(packet);
    Ok(())
}

/// Appends a complete Ethernet frame carrying an IGMP membership query from
/// `router_ip` to `out`: a general query to 224.0.0.1 when `group` is `None`,
/// a group-specific query to the group otherwise. IPv4 TTL 1 with Router
/// Alert, DSCP CS6 (as Linux sends IGMP), valid IPv4 and IGMP checksums.
///
/// `V2` emits the 8-byte RFC 2236 format; `V3` emits the 12-byte RFC 3376
/// format advertising the RFC default robustness (2) and query interval
/// (125 s). A querier with other settings uses [`build_igmp_v3_query`] so that
/// hosts learn its real QRV/QQIC.
pub fn build_igmp_query(
    router_ip: Ipv4Addr,
    group: Option<Ipv4Addr>,
    version: IgmpVersion,
    max_resp: Duration,
    out: &mut BytesMut,
) {
    match version {
        IgmpVersion::V2 => {
            // RFC 2236 §2.2: units of 1/10 s in one byte; 0 would turn the
            // query into an IGMPv1 one, so at least 1.
            let tenths = (max_resp.as_micros() / 100_000).clamp(1, u64::from(u8::MAX));
            let max_response_time = u8::try_from(tenths).unwrap_or(u8::MAX);
            let igmp = IgmpType::MembershipQuery(MembershipQueryType {
                max_response_time,
                group_address: GroupAddress::from(group.unwrap_or(Ipv4Addr::UNSPECIFIED)),
            });
            write_query_frame(router_ip, group, igmp, out);
        }
        IgmpVersion::V3 => {
            build_igmp_v3_query(router_ip, group, max_resp, V3QueryFields::default(), out)
        }
    }
}

/// [`build_igmp_query`] in the IGMPv3 format with explicit S flag, QRV
/// (clamped to 0..=7; RFC 3376 §4.1.6 sends 0 when robustness exceeds 7) and
/// QQI (encoded as QQIC, rounded down, RFC 3376 §4.1.7).
pub fn build_igmp_v3_query(
    router_ip: Ipv4Addr,
    group: Option<Ipv4Addr>,
    max_resp: Duration,
    fields: V3QueryFields,
    out: &mut BytesMut,
) {
    let mut header = MembershipQueryWithSourcesHeader {
        max_response_code: MaxResponseCode(encode_float_code(max_resp.as_micros() / 100_000)),
        group_address: GroupAddress::from(group.unwrap_or(Ipv4Addr::UNSPECIFIED)),
        raw_byte_8: 0,
        qqic: encode_float_code(fields.qqi.as_micros() / 1_000_000),
        num_of_sources: 0,
    };
    let qrv = if fields.qrv > 7 { 0 } else { fields.qrv };
    // QRV 0..=7 always fits the 3-bit field.
    header.raw_byte_8 = (u8::from(fields.suppress_router_processing) << 3) | qrv;
    write_query_frame(
        router_ip,
        group,
        IgmpType::MembershipQueryWithSources(header),
        out,
    );
}

fn write_query_frame(
    router_ip: Ipv4Addr,
    group: Option<Ipv4Addr>,
    igmp_type: IgmpType,
    out: &mut BytesMut,
) {
    let dst = group.unwrap_or(ALL_SYSTEMS);
    let igmp = IgmpHeader::with_checksum(igmp_type, &[]).to_bytes();
    let mut ip = Ipv4Header {
        dscp: IpDscp::CS6,
        ecn: IpEcn::NotEct,
        // At most 24 + 12 bytes: always fits a u16.
        total_len: (IGMP_IP_HEADER_LEN + igmp.len()) as u16,
        identification: 0,
        dont_fragment: true,
        more_fragments: false,
        fragment_offset: IpFragOffset::ZERO,
        time_to_live: 1,
        protocol: IpNumber::IGMP,
        header_checksum: 0,
        source: router_ip.octets(),
        destination: dst.octets(),
        options: ROUTER_ALERT.into(),
    };
    ip.header_checksum = ip.calc_header_checksum();
    let eth = Ethernet2Header {
        source: ROUTER_MAC,
        destination: group_mac(dst),
        ether_type: EtherType::IPV4,
    };
    out.reserve(ETHERNET_HEADER_LEN + IGMP_IP_HEADER_LEN + igmp.len());
    out.extend_from_slice(&eth.to_bytes());
    out.extend_from_slice(&ip.to_bytes());
    out.extend_from_slice(&igmp);
}

/// Encodes a value (tenths of a second for Max Resp Code, seconds for QQIC)
/// in RFC 3376's 8-bit format (§4.1.1, §4.1.7): literal below 128, otherwise
/// `1 exp(3) mant(4)` meaning `(mant | 0x10) << (exp + 3)`. Rounds down so we
/// never advertise more than we mean; saturates at 31744.
pub fn encode_float_code(value: u64) -> u8 {
    if value < 128 {
        // Checked just above.
        return value as u8;
    }
    for exp in 0u8..8 {
        let mant = value >> (exp + 3);
        if mant < 0x20 {
            // 0x10 <= mant < 0x20 here: value >= 128 makes mant >= 16 at
            // exp 0, and each larger exp is tried only if the previous
            // mant was >= 32, so this one is >= 16.
            return 0x80 | (exp << 4) | (mant as u8 & 0x0f);
        }
    }
    0xff
}

/// Decodes RFC 3376's 8-bit float format (inverse of [`encode_float_code`]).
pub fn decode_float_code(code: u8) -> u64 {
    if code < 128 {
        u64::from(code)
    } else {
        let exp = (code >> 4) & 0x07;
        let mant = u64::from(code & 0x0f) | 0x10;
        mant << (exp + 3)
    }
}

/// An IPv4 packet whose header and lengths were checked.
struct Ipv4View<'a> {
    header: Ipv4HeaderSlice<'a>,
    /// The packet cut at its total length.
    packet: &'a [u8],
    /// The bytes after the header (options included in the header).
    payload: &'a [u8],
}

impl<'a> Ipv4View<'a> {
    fn parse(data: &'a [u8]) -> Result<Self, FrameError> {
        let header = Ipv4HeaderSlice::from_slice(data).map_err(|e| match e {
            HeaderSliceError::Len(l) => FrameError::Truncated {
                layer: Layer::Ipv4Header,
                required: l.required_len,
                len: l.len,
            },
            HeaderSliceError::Content(HeaderError::UnexpectedVersion { version_number }) => {
                FrameError::NotIpv4(version_number)
            }
            HeaderSliceError::Content(HeaderError::HeaderLengthSmallerThanHeader { ihl }) => {
                FrameError::BadIhl(ihl)
            }
        })?;
        let header_len = header.slice().len();
        let total_len = usize::from(header.total_len());
        if total_len < header_len {
            return Err(FrameError::BadTotalLen {
                total_len,
                header_len,
                len: data.len(),
            });
        }
        let Some(packet) = data.get(..total_len) else {
            return Err(FrameError::Truncated {
                layer: Layer::Ipv4Packet,
                required: total_len,
                len: data.len(),
            });
        };
        // A correct header sums (ones' complement, checksum field included)
        // to 0xffff, i.e. its complement is 0.
        if Sum16BitWords::new()
            .add_slice(header.slice())
            .ones_complement()
            != 0
        {
            return Err(FrameError::BadIpChecksum);
        }
        let payload = packet.get(header_len..).unwrap_or_default();
        Ok(Ipv4View {
            header,
            packet,
            payload,
        })
    }
}

/// Decodes an IGMP message (exactly the IPv4 payload: the query version
/// depends on the length). `Ok(Err(_))` is a well-formed message we ignore.
fn parse_igmp(data: &[u8]) -> Result<Result<IgmpMessage, IgnoreReason>, FrameError> {
    if data.len() < IgmpHeader::MIN_LEN {
        return Err(FrameError::Truncated {
            layer: Layer::Igmp,
            required: IgmpHeader::MIN_LEN,
            len: data.len(),
        });
    }
    if Sum16BitWords::new().add_slice(data).ones_complement() != 0 {
        return Err(FrameError::BadIgmpChecksum);
    }
    let truncated = |e: etherparse::err::LenError| FrameError::Truncated {
        layer: Layer::Igmp,
        required: e.required_len,
        len: e.len,
    };
    let igmp = IgmpSlice::from_slice(data).map_err(truncated)?;
    let msg = match igmp {
        IgmpSlice::MembershipQuery(q) => IgmpMessage::Query(Query {
            group: nonzero(q.group_address().into()),
            max_resp: Duration::from_millis(u64::from(q.max_response_time()) * 100),
            v3: None,
            sources: SmallVec::new(),
        }),
        IgmpSlice::MembershipQueryWithSources(q) => IgmpMessage::Query(Query {
            group: nonzero(q.group_address().into()),
            max_resp: Duration::from_millis(u64::from(q.max_response_code().as_10th_secs()) * 100),
            v3: Some(V3QueryFields {
                suppress_router_processing: q.s_flag(),
                qrv: q.qrv().value(),
                qqi: Duration::from_secs(decode_float_code(q.qqic())),
            }),
            sources: q.source_addresses().map(Ipv4Addr::from).collect(),
        }),
        IgmpSlice::MembershipReportV1(r) => IgmpMessage::ReportV1 {
            group: r.group_address().into(),
        },
        IgmpSlice::MembershipReportV2(r) => IgmpMessage::ReportV2 {
            group: r.group_address().into(),
        },
        IgmpSlice::LeaveGroup(l) => IgmpMessage::LeaveV2 {
            group: l.group_address().into(),
        },
        IgmpSlice::MembershipReportV3(r) => {
            let mut records = SmallVec::new();
            for record in r.group_records() {
                let record = record.map_err(truncated)?;
                records.push(GroupRecord {
                    record_type: GroupRecordType::from(record.record_type().0),
                    group: Ipv4Addr::from(record.multicast_address()),
                    sources: record.source_addresses().map(Ipv4Addr::from).collect(),
                });
            }
            IgmpMessage::ReportV3 { records }
        }
        IgmpSlice::Unknown(u) => return Ok(Err(IgnoreReason::UnknownIgmpType(u.type_u8()))),
    };
    Ok(Ok(msg))
}

fn nonzero(addr: Ipv4Addr) -> Option<Ipv4Addr> {
    (!addr.is_unspecified()).then_some(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!("../../../shared/fixtures/tap-frames-linux-6.18.hex");
    const GROUP: Ipv4Addr = Ipv4Addr::new(239, 1, 2, 3);
    const HOST: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 5);
    const ROUTER: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 1);

    fn unhex(s: &str) -> Vec<u8> {
        assert!(s.len() % 2 == 0, "odd hex line");
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("fixture is hex"))
            .collect()
    }

    fn fixture_frames() -> Vec<Vec<u8>> {
        FIXTURE
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(unhex)
            .collect()
    }

    /// A UDP datagram to `dst` with a correct IPv4 checksum, as an IPv4 packet.
    fn udp_packet(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8) -> Vec<u8> {
        let mut v = Vec::new();
        etherparse::PacketBuilder::ipv4(src.octets(), dst.octets(), ttl)
            .udp(4000, 5001)
            .write(&mut v, b"hello multicast")
            .expect("writing into a Vec cannot fail");
        v
    }

    fn ip_checksum_ok(packet: &[u8]) -> bool {
        let ihl = usize::from(packet[0] & 0x0f) * 4;
        Sum16BitWords::new()
            .add_slice(&packet[..ihl])
            .ones_complement()
            == 0
    }

    #[test]
    fn fixture_frames_classify_as_expected() {
        let frames = fixture_frames();
        assert_eq!(frames.len(), 11);
        let (mut udp, mut v3, mut v6) = (0, 0, 0);
        for f in &frames {
            match parse_tap_frame(f).expect("real frames parse") {
                TapFrame::Multicast {
                    src,
                    group,
                    ttl,
                    packet,
                } => {
                    udp += 1;
                    assert_eq!(src, HOST);
                    assert_eq!(group, GROUP);
                    assert_eq!(ttl, 1);
                    assert_eq!(packet.len(), 0x80);
                    assert_eq!(packet, &f[14..]);
                    assert_eq!(validate_ipv4_multicast_packet(packet), Ok((HOST, GROUP, 1)));
                }
                TapFrame::Igmp { src, dst, msg } => {
                    v3 += 1;
                    assert_eq!(src, HOST);
                    assert_eq!(dst, ALL_IGMPV3_ROUTERS);
                    let IgmpMessage::ReportV3 { records } = msg else {
                        panic!("expected a v3 report, got {msg:?}");
                    };
                    assert_eq!(
                        records.as_slice(),
                        &[GroupRecord {
                            record_type: GroupRecordType::ChangeToExclude,
                            group: GROUP,
                            sources: SmallVec::new(),
                        }]
                    );
                }
                TapFrame::Ignored(IgnoreReason::NotIpv4 { ether_type }) => {
                    assert_eq!(ether_type, 0x86dd);
                    v6 += 1;
                }
                other => panic!("unexpected classification {other:?}"),
            }
        }
        assert_eq!((udp, v3, v6), (3, 2, 6));
    }

    #[test]
    fn every_prefix_and_bitflip_of_fixtures_is_handled_without_panic() {
        for f in fixture_frames() {
            for n in 0..f.len() {
                let r = parse_tap_frame(&f[..n]);
                // A prefix never yields more than it holds.
                if let Ok(TapFrame::Multicast { packet, .. }) = r {
                    panic!(
                        "truncated frame of {n} bytes accepted as data ({} bytes)",
                        packet.len()
                    );
                }
                let _ = validate_ipv4_multicast_packet(f.get(14..n).unwrap_or_default());
            }
            let is_ipv4 = f[12..14] == [0x08, 0x00];
            let ihl = usize::from(f[14] & 0x0f) * 4;
            for i in 0..f.len() {
                for bit in 0..8 {
                    let mut g = f.clone();
                    g[i] ^= 1 << bit;
                    let r = parse_tap_frame(&g);
                    let w = write_multicast_frame(&g[14..], &mut BytesMut::new());
                    // The header checksum catches every single-bit error in
                    // the IPv4 header: corruption there never passes as data.
                    if is_ipv4 && (14..14 + ihl).contains(&i) {
                        assert!(
                            !matches!(r, Ok(TapFrame::Multicast { .. })),
                            "bit {bit} of byte {i} flipped yet accepted"
                        );
                        assert!(w.is_err(), "bit {bit} of byte {i} flipped yet written");
                    }
                }
            }
        }
    }

    #[test]
    fn truncated_ipv4_is_an_error_and_padding_is_trimmed() {
        let f = &fixture_frames()[0];
        assert!(matches!(
            parse_tap_frame(&f[..f.len() - 1]),
            Err(FrameError::Truncated {
                layer: Layer::Ipv4Packet,
                ..
            })
        ));
        let mut padded = f.clone();
        padded.extend_from_slice(&[0; 10]);
        let Ok(TapFrame::Multicast { packet, .. }) = parse_tap_frame(&padded) else {
            panic!("padded frame must still parse");
        };
        assert_eq!(packet, &f[14..]);
    }

    #[test]
    fn bad_checksums_are_errors() {
        let frames = fixture_frames();
        let mut udp = frames[0].clone();
        udp[14 + 10] ^= 0x01; // IPv4 header checksum
        assert_eq!(parse_tap_frame(&udp), Err(FrameError::BadIpChecksum));
        let mut igmp = frames[3].clone();
        igmp[14 + 24 + 2] ^= 0x01; // IGMP checksum
        assert_eq!(parse_tap_frame(&igmp), Err(FrameError::BadIgmpChecksum));
    }

    #[test]
    fn unicast_and_link_local_data_are_ignored() {
        let mut buf = BytesMut::new();
        let uni = udp_packet(HOST, ROUTER, 64);
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x08, 0x00]);
        frame.extend_from_slice(&uni);
        assert_eq!(
            parse_tap_frame(&frame),
            Ok(TapFrame::Ignored(IgnoreReason::NotMulticast(ROUTER)))
        );
        let mdns = Ipv4Addr::new(224, 0, 0, 251);
        buf.clear();
        frame.truncate(14);
        frame.extend_from_slice(&udp_packet(HOST, mdns, 255));
        assert_eq!(
            parse_tap_frame(&frame),
            Ok(TapFrame::Ignored(IgnoreReason::LinkLocalGroup(mdns)))
        );
    }

    #[test]
    fn write_multicast_frame_round_trips_a_valid_packet() {
        let packet = udp_packet(HOST, GROUP, 3);
        let mut out = BytesMut::new();
        write_multicast_frame(&packet, &mut out).expect("valid packet");
        assert_eq!(&out[..6], &[0x01, 0x00, 0x5e, 0x01, 0x02, 0x03]);
        assert_eq!(&out[6..12], &ROUTER_MAC);
        assert_eq!(&out[12..14], &[0x08, 0x00]);
        assert_eq!(&out[14..], packet.as_slice());
        assert!(ip_checksum_ok(&out[14..]));
        assert_eq!(
            parse_tap_frame(&out),
            Ok(TapFrame::Multicast {
                src: HOST,
                group: GROUP,
                ttl: 3,
                packet: &packet
            })
        );
    }

    #[test]
    fn write_multicast_frame_rejects_what_must_not_reach_the_host() {
        let good = udp_packet(HOST, GROUP, 3);
        let mut out = BytesMut::new();

        let mut bad_sum = good.clone();
        bad_sum[10] ^= 0xff;
        assert_eq!(
            write_multicast_frame(&bad_sum, &mut out),
            Err(FrameError::BadIpChecksum)
        );
        assert!(matches!(
            write_multicast_frame(&good[..good.len() - 1], &mut out),
            Err(FrameError::Truncated { .. })
        ));
        assert!(matches!(
            write_multicast_frame(&good[..10], &mut out),
            Err(FrameError::Truncated { .. })
        ));
        let mut longer = good.clone();
        longer.push(0);
        assert!(matches!(
            write_multicast_frame(&longer, &mut out),
            Err(FrameError::BadTotalLen { .. })
        ));
        assert_eq!(
            write_multicast_frame(&udp_packet(HOST, ROUTER, 3), &mut out),
            Err(FrameError::NotMulticast(ROUTER))
        );
        let ll = Ipv4Addr::new(224, 0, 0, 9);
        assert_eq!(
            write_multicast_frame(&udp_packet(HOST, ll, 3), &mut out),
            Err(FrameError::LinkLocalGroup(ll))
        );
        assert_eq!(
            write_multicast_frame(&udp_packet(HOST, GROUP, 0), &mut out),
            Err(FrameError::TtlExpired)
        );
        let bcast = Ipv4Addr::BROADCAST;
        assert_eq!(
            write_multicast_frame(&udp_packet(bcast, GROUP, 3), &mut out),
            Err(FrameError::MartianSource(bcast))
        );
        assert!(matches!(
            write_multicast_frame(&[0x60; 40], &mut out),
            Err(FrameError::NotIpv4(6))
        ));
        // An IGMP report (from the fixtures, re-addressed to a routable
        // group with a fixed checksum) must never be injected.
        let mut igmp = fixture_frames()[3][14..].to_vec();
        igmp[16..20].copy_from_slice(&GROUP.octets());
        igmp[10..12].fill(0);
        let sum = Sum16BitWords::new()
            .add_slice(&igmp[..24])
            .ones_complement();
        // The sum is over native-endian words, so it is stored native-endian.
        igmp[10..12].copy_from_slice(&sum.to_ne_bytes());
        assert_eq!(
            write_multicast_frame(&igmp, &mut out),
            Err(FrameError::IgmpFromOverlay)
        );
        assert!(out.is_empty(), "nothing written on error");
    }

    #[test]
    fn group_mac_keeps_low_23_bits() {
        assert_eq!(group_mac(GROUP), [0x01, 0x00, 0x5e, 0x01, 0x02, 0x03]);
        assert_eq!(
            group_mac(Ipv4Addr::new(239, 129, 2, 3)),
            [0x01, 0x00, 0x5e, 0x01, 0x02, 0x03]
        );
        assert_eq!(group_mac(ALL_SYSTEMS), [0x01, 0x00, 0x5e, 0, 0, 1]);
    }

    /// Parses a query frame we built and checks everything a host checks.
    fn parse_query(frame: &[u8]) -> (Ipv4Addr, Query) {
        assert_eq!(&frame[6..12], &ROUTER_MAC);
        let ip = &frame[14..];
        assert_eq!(ip[0], 0x46, "IHL 6: Router Alert option present");
        assert_eq!(&ip[20..24], &ROUTER_ALERT);
        assert_eq!(ip[8], 1, "TTL 1");
        assert!(ip_checksum_ok(ip));
        match parse_tap_frame(frame).expect("our own frame parses") {
            TapFrame::Igmp {
                src,
                dst,
                msg: IgmpMessage::Query(q),
            } => {
                assert_eq!(src, ROUTER);
                assert_eq!(&frame[..6], &group_mac(dst));
                (dst, q)
            }
            other => panic!("not a query: {other:?}"),
        }
    }

    #[test]
    fn v2_queries_parse_back() {
        let mut out = BytesMut::new();
        build_igmp_query(
            ROUTER,
            None,
            IgmpVersion::V2,
            Duration::from_secs(10),
            &mut out,
        );
        let (dst, q) = parse_query(&out);
        assert_eq!(dst, ALL_SYSTEMS);
        assert_eq!(&out[..6], &[0x01, 0x00, 0x5e, 0, 0, 1]);
        assert_eq!(q.group, None);
        assert_eq!(q.max_resp, Duration::from_secs(10));
        assert_eq!(q.version(), 2);
        assert_eq!(out.len(), 14 + 24 + 8);

        out.clear();
        build_igmp_query(
            ROUTER,
            Some(GROUP),
            IgmpVersion::V2,
            Duration::from_millis(1_000),
            &mut out,
        );
        let (dst, q) = parse_query(&out);
        assert_eq!(dst, GROUP);
        assert_eq!(q.group, Some(GROUP));
        assert_eq!(q.max_resp, Duration::from_secs(1));
        // A v2 max resp of 0 would make it a v1 query: clamp to 1/10 s.
        out.clear();
        build_igmp_query(ROUTER, None, IgmpVersion::V2, Duration::ZERO, &mut out);
        assert_eq!(parse_query(&out).1.version(), 2);
    }

    #[test]
    fn v3_queries_parse_back_with_qrv_and_qqic() {
        let mut out = BytesMut::new();
        build_igmp_query(
            ROUTER,
            None,
            IgmpVersion::V3,
            Duration::from_secs(10),
            &mut out,
        );
        assert_eq!(out.len(), 14 + 24 + 12);
        let (dst, q) = parse_query(&out);
        assert_eq!(dst, ALL_SYSTEMS);
        assert_eq!(q.version(), 3);
        assert_eq!(q.max_resp, Duration::from_secs(10));
        assert_eq!(q.v3, Some(V3QueryFields::default()));

        out.clear();
        let fields = V3QueryFields {
            suppress_router_processing: true,
            qrv: 3,
            qqi: Duration::from_secs(300),
        };
        build_igmp_v3_query(
            ROUTER,
            Some(GROUP),
            Duration::from_secs(1),
            fields,
            &mut out,
        );
        let (dst, q) = parse_query(&out);
        assert_eq!(dst, GROUP);
        assert_eq!(q.group, Some(GROUP));
        assert_eq!(q.max_resp, Duration::from_secs(1));
        // 300 s is not representable: rounded down to 288 s (0x12 << 4).
        let got = q.v3.expect("v3 fields");
        assert!(got.suppress_router_processing);
        assert_eq!(got.qrv, 3);
        assert_eq!(got.qqi, Duration::from_secs(288));
    }

    #[test]
    fn float_code_matches_rfc_3376_and_etherparse() {
        for code in 0..=u8::MAX {
            let v = decode_float_code(code);
            assert_eq!(v, u64::from(MaxResponseCode(code).as_10th_secs()));
            assert_eq!(encode_float_code(v), code, "code {code:#x}");
        }
        for v in 0..40_000u64 {
            let c = encode_float_code(v);
            assert!(decode_float_code(c) <= v, "rounds down at {v}");
        }
        assert_eq!(encode_float_code(125), 125);
        assert_eq!(encode_float_code(u64::MAX), 0xff);
    }
}
