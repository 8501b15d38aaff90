//! RFC 4475 torture messages. Fixtures are written from the RFC's text (its
//! `<allOneLine>`/`<repeat>` notation expanded; SDP bodies rebuilt to the declared
//! Content-Length). Valid messages must parse with the right values; invalid ones
//! must be rejected with the error the RFC expects, never a panic. Where the RFC lets
//! a parser accept a message that a UA then refuses at the application layer, the
//! test says so and checks what the application needs to decide.

use whatsip_sip::{
    Branch, Contacts, Host, Method, ParseError, ParseLimits, Request, Response, SipMessage,
    StatusCode, Transport, TxnKey, Uri, error_response,
};

fn parse(raw: &[u8]) -> Result<SipMessage, ParseError> {
    SipMessage::parse(raw, &ParseLimits::default())
}

fn crlf(s: &str) -> Vec<u8> {
    s.replace("\r\n", "\n").replace('\n', "\r\n").into_bytes()
}

fn req(raw: &[u8]) -> Request {
    match parse(raw) {
        Ok(SipMessage::Request(r)) => r,
        other => panic!("expected a request, got {other:?}"),
    }
}

fn resp(raw: &[u8]) -> Response {
    match parse(raw) {
        Ok(SipMessage::Response(r)) => r,
        other => panic!("expected a response, got {other:?}"),
    }
}

/// The RFC's 150-byte SDP body (`o=`/`c=` addresses vary per message).
fn sdp(o: &str, c: &str) -> String {
    format!(
        "v=0\r\no=mhandley 29739 7272939 IN IP4 {o}\r\ns=-\r\nc=IN IP4 {c}\r\nt=0 0\r\nm=audio 49217 RTP/AVP 0 12\r\nm=video 3227 RTP/AVP 31\r\na=rtpmap:31 LPC\r\n"
    )
}

/// A body of exactly `n` bytes (for invalid messages whose SDP does not matter).
fn body(n: usize) -> String {
    let mut b = sdp("192.0.2.1", "192.0.2.1");
    while b.len() < n {
        b.push('x');
    }
    b.truncate(n);
    b
}

// ---------------------------------------------------------------- 3.1.1 valid

#[test]
fn wsinv_short_tortuous_invite() {
    let head = r#"INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0
TO :
 sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n
from   : "J Rosenberg \\\""       <sip:jdrosen@example.com>
  ;
  tag = 98asjd8
MaX-fOrWaRdS: 0068
Call-ID: wsinv.ndaksdj@192.0.2.1
Content-Length   : 150
cseq: 0009
  INVITE
Via  : SIP  /   2.0
 /UDP
    192.0.2.2;branch=390skdjuw
s :
NewFangledHeader:   newfangled value
 continued newfangled value
UnknownHeaderWithUnusualValue: ;;,,;;,;
Content-Type: application/sdp
Route:
 <sip:services.example.com;lr;unknownwith=value;unknown-no-value>
v:  SIP  / 2.0  / TCP     spindle.example.com   ;
  branch  =   z9hG4bK9ikj8  ,
 SIP  /    2.0   / UDP  192.168.255.111   ; branch=
 z9hG4bK30239
m:"Quoted string \"\"" <sip:jdrosen@example.com> ; newparam =
      newvalue ;
  secondparam ; q = 0.33

"#;
    let mut raw = crlf(head);
    raw.extend_from_slice(sdp("192.0.2.3", "192.0.2.4").as_bytes());
    let r = req(&raw);
    assert_eq!(r.method, Method::Invite);
    assert!(r.uri.as_sip().unwrap().params.contains("unknownparam"));
    assert_eq!(r.to_tag().unwrap().as_str(), "1918181833n");
    let from = r.from().unwrap();
    assert_eq!(from.display_name.as_deref(), Some(r#"J Rosenberg \""#));
    assert_eq!(from.tag().unwrap().as_str(), "98asjd8");
    assert_eq!(r.headers.max_forwards(), Some(68));
    let cseq = r.cseq().unwrap();
    assert_eq!((cseq.seq, cseq.method), (9, Method::Invite));
    let vias = r.headers.vias().unwrap();
    assert_eq!(vias.len(), 3);
    assert_eq!(vias[0].branch().unwrap().as_str(), "390skdjuw");
    assert_eq!(vias[1].transport, Transport::Tcp);
    assert_eq!(vias[1].host, Host::Domain("spindle.example.com".into()));
    assert_eq!(vias[1].branch().unwrap().as_str(), "z9hG4bK9ikj8");
    assert_eq!(vias[2].branch().unwrap().as_str(), "z9hG4bK30239");
    assert_eq!(r.headers.get("Subject"), Some(""));
    assert_eq!(
        r.headers.get("newfangledheader"),
        Some("newfangled value continued newfangled value")
    );
    assert_eq!(
        r.headers.get("UnknownHeaderWithUnusualValue"),
        Some(";;,,;;,;")
    );
    assert_eq!(r.headers.routes().unwrap().len(), 1);
    let Some(Contacts::Addresses(c)) = r.headers.contacts() else {
        panic!("contact")
    };
    assert_eq!(c[0].display_name.as_deref(), Some(r#"Quoted string """#));
    assert_eq!(c[0].params.value("newparam"), Some("newvalue"));
    assert!(c[0].params.contains("secondparam"));
    assert_eq!(c[0].q(), Some(0.33));
    assert_eq!(r.body.len(), 150);
}

#[test]
fn intmeth_wide_range_of_valid_characters() {
    let mut raw = Vec::new();
    raw.extend_from_slice(b"!interesting-Method0123456789_*+`.%indeed'~ sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com SIP/2.0\r\n");
    raw.extend_from_slice(b"Via: SIP/2.0/TCP host1.example.com;branch=z9hG4bK-.!%66*_+`'~\r\n");
    raw.extend_from_slice(b"To: \"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7F\" <sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com>\r\n");
    raw.extend_from_slice("From: token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;fromParam''~+*_!.-%=\"работающий\";tag=_token~1'+`*%!-.\r\n".as_bytes());
    raw.extend_from_slice(b"Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{\r\n");
    raw.extend_from_slice(b"CSeq: 139122385 !interesting-Method0123456789_*+`.%indeed'~\r\n");
    raw.extend_from_slice(b"Max-Forwards: 255\r\n");
    raw.extend_from_slice(
        b"extensionHeader-!.%*+_`'~:\xEF\xBB\xBF\xE5\xA4\xA7\xE5\x81\x9C\xE9\x9B\xBB\r\n",
    );
    raw.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    let r = req(&raw);
    assert_eq!(
        r.method,
        Method::Extension("!interesting-Method0123456789_*+`.%indeed'~".into())
    );
    let u = r.uri.as_sip().unwrap();
    assert_eq!(
        u.user.as_deref(),
        Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
    );
    assert_eq!(
        u.password.as_deref(),
        Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
    );
    assert_eq!(r.branch().unwrap().as_str(), "z9hG4bK-.!%66*_+`'~");
    assert_eq!(
        r.to().unwrap().display_name.as_deref(),
        Some("BEL:\x07 NUL:\x00 DEL:\x7F")
    );
    let from = r.from().unwrap();
    assert_eq!(
        from.display_name.as_deref(),
        Some("token1~` token2'+_ token3*%!.-")
    );
    assert_eq!(
        from.params
            .get("fromParam''~+*_!.-%")
            .unwrap()
            .unquoted_value()
            .as_deref(),
        Some("работающий")
    );
    assert_eq!(from.tag().unwrap().as_str(), "_token~1'+`*%!-.");
    assert_eq!(
        r.call_id().unwrap().as_str(),
        "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    );
    assert_eq!(r.headers.max_forwards(), Some(255));
    assert_eq!(
        r.headers.get("extensionHeader-!.%*+_`'~"),
        Some("\u{feff}大停電")
    );
}

#[test]
fn esc01_valid_percent_escaping() {
    let head = "INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0
To: sip:%75se%72@example.com
From: <sip:I%20have%20spaces@example.net>;tag=938
Max-Forwards: 87
i: esc01.239409asdfakjkn23onasd0-3234
CSeq: 234234 INVITE
Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bKkdjuw
C: application/sdp
Contact:
  <sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>
Content-Length: 150

";
    let mut raw = crlf(head);
    raw.extend_from_slice(sdp("192.0.2.1", "192.0.2.1").as_bytes());
    let r = req(&raw);
    let u = r.uri.as_sip().unwrap();
    assert_eq!(u.user_unescaped().as_deref(), Some("sips:user@example.com"));
    assert_eq!(u.host, Host::Domain("example.net".into()));
    let to = r.to().unwrap();
    assert_eq!(
        to.uri.as_sip().unwrap().user_unescaped().as_deref(),
        Some("user")
    );
    assert_eq!(
        r.from()
            .unwrap()
            .uri
            .as_sip()
            .unwrap()
            .user_unescaped()
            .as_deref(),
        Some("I have spaces")
    );
    let Some(Contacts::Addresses(c)) = r.headers.contacts() else {
        panic!()
    };
    let cu = c[0].uri.as_sip().unwrap();
    assert_eq!(cu.user_unescaped().as_deref(), Some("caller"));
    // value%41 is not valueA: unescaping is never recursive
    assert_eq!(cu.params.value("n%61me"), Some("v%61lue%25%34%31"));
    assert_eq!(whatsip_sip::percent_decode("v%61lue%25%34%31"), "value%41");
    assert!(r.headers.content_type().unwrap().is("application", "sdp"));
}

#[test]
fn escnull_escaped_nulls_in_uris() {
    let raw = crlf(
        "REGISTER sip:example.com SIP/2.0
To: sip:null-%00-null@example.com
From: sip:null-%00-null@example.com;tag=839923423
Max-Forwards: 70
Call-ID: escnull.39203ndfvkjdasfkq3w4otrq0adsfdfnavd
CSeq: 14398234 REGISTER
Via: SIP/2.0/UDP host5.example.com;branch=z9hG4bKkdjuw
Contact: <sip:%00@host5.example.com>
Contact: <sip:%00%00@host5.example.com>
L:0

",
    );
    let r = req(&raw);
    let to_user = r
        .to()
        .unwrap()
        .uri
        .as_sip()
        .unwrap()
        .user_unescaped()
        .unwrap();
    assert_eq!(to_user, "null-\0-null", "not cut at the NUL");
    let Some(Contacts::Addresses(c)) = r.headers.contacts() else {
        panic!()
    };
    assert_eq!(c.len(), 2, "two distinct contacts");
    assert_ne!(c[0].uri, c[1].uri);
    assert_eq!(r.headers.content_length(), Some(0));
}

#[test]
fn esc02_percent_that_is_not_an_escape() {
    let raw = crlf(
        r#"RE%47IST%45R sip:registrar.example.com SIP/2.0
To: "%Z%45" <sip:resource@example.com>
From: "%Z%45" <sip:resource@example.com>;tag=f232jadfj23
Call-ID: esc02.asdfnqwo34rq23i34jrjasdcnl23nrlknsdf
Via: SIP/2.0/TCP host.example.com;branch=z9hG4bK209%fzsnel234
CSeq: 29344 RE%47IST%45R
Max-Forwards: 70
Contact: <sip:alias1@host1.example.com>
C%6Fntact: <sip:alias2@host2.example.com>
Contact: <sip:alias3@host3.example.com>
l: 0

"#,
    );
    let r = req(&raw);
    assert_eq!(r.method, Method::Extension("RE%47IST%45R".into()));
    assert_ne!(r.method, Method::Register);
    assert_eq!(r.to().unwrap().display_name.as_deref(), Some("%Z%45"));
    assert_eq!(r.branch().unwrap().as_str(), "z9hG4bK209%fzsnel234");
    assert_eq!(r.headers.contacts().unwrap().addresses().len(), 2);
    assert_eq!(
        r.headers.get("C%6Fntact"),
        Some("<sip:alias2@host2.example.com>")
    );
}

#[test]
fn lwsdisp_no_lws_between_display_name_and_laquot() {
    let raw = crlf(
        "OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: caller<sip:caller@example.com>;tag=323
Max-Forwards: 70
Call-ID: lwsdisp.1234abcd@funky.example.com
CSeq: 60 OPTIONS
Via: SIP/2.0/UDP funky.example.com;branch=z9hG4bKkdjuw
l: 0

",
    );
    let r = req(&raw);
    let from = r.from().unwrap();
    assert_eq!(from.display_name.as_deref(), Some("caller"));
    assert_eq!(from.uri.to_string(), "sip:caller@example.com");
    assert_eq!(from.tag().unwrap().as_str(), "323");
}

fn longreq() -> Vec<u8> {
    let mut head = String::from("INVITE sip:user@example.com SIP/2.0\n");
    head += &format!(
        "To: \"I have a user name of {} proportion\"<sip:user@example.com:6000;unknownparam1=very{}value;longparam{}=shortvalue;very{}ParameterNameWithNoValue>\n",
        "extreme".repeat(10),
        "long".repeat(20),
        "name".repeat(25),
        "long".repeat(25)
    );
    head += &format!(
        "F: sip:{}@example.net;tag=12{}424;unknownheaderparam{}=unknowheaderparam{};unknownValueless{}\n",
        "amazinglylongcallername".repeat(5),
        "982".repeat(50),
        "name".repeat(20),
        "value".repeat(15),
        "paramname".repeat(10)
    );
    head += &format!("Call-ID: longreq.one{}longcallid\n", "really".repeat(20));
    head += "CSeq: 3882340 INVITE\n";
    head += &format!(
        "Unknown-{}-Name: unknown-{}-value; unknown-{}-parameter-name = unknown-{}-parameter-value\n",
        "Long".repeat(20),
        "long".repeat(20),
        "long".repeat(20),
        "long".repeat(20)
    );
    let names = [
        "Via", "v", "V", "Via", "ViA", "VIa", "VIA", "via", "viA", "vIa", "vIA", "V ", "v ", "V  ",
        "v  ", "Via ", "Via  ",
    ];
    for (k, n) in names.iter().enumerate() {
        let host = 33 - k;
        let sep = if n.ends_with(' ') && n.len() <= 2 {
            ":  "
        } else {
            ": "
        };
        head += &format!("{n}{sep}SIP/2.0/TCP sip{host}.example.com\n");
    }
    for host in (1..=16).rev() {
        head += &format!("Via: SIP/2.0/TCP sip{host}.example.com\n");
    }
    head += &format!(
        "Via: SIP/2.0/TCP host.example.com;received=192.0.2.5;branch=very{}branchvalue\n",
        "long".repeat(50)
    );
    head += "Max-Forwards: 70\n";
    head += &format!(
        "Contact: <sip:{}@host5.example.net>\n",
        "amazinglylongcallername".repeat(5)
    );
    head += "Content-Type: application/sdp\nl: 150\n\n";
    let mut raw = crlf(&head);
    raw.extend_from_slice(sdp("192.0.2.1", "192.0.2.1").as_bytes());
    raw
}

#[test]
fn longreq_long_values_in_header_fields() {
    let r = req(&longreq());
    let vias = r.headers.vias().unwrap();
    assert_eq!(vias.len(), 34);
    assert_eq!(vias[0].host, Host::Domain("sip33.example.com".into()));
    assert_eq!(
        vias[33].branch().unwrap().as_str(),
        format!("very{}branchvalue", "long".repeat(50))
    );
    assert_eq!(vias[33].received(), Some("192.0.2.5".parse().unwrap()));
    assert_eq!(r.to().unwrap().uri.as_sip().unwrap().port, Some(6000));
    assert_eq!(r.from_tag().unwrap().as_str().len(), 2 + 150 + 3);
    assert_eq!(r.body.len(), 150);
}

#[test]
fn dblreq_extra_trailing_octets_in_a_udp_datagram() {
    let mut raw = crlf(
        "REGISTER sip:example.com SIP/2.0
To: sip:j.user@example.com
From: sip:j.user@example.com;tag=43251j3j324
Max-Forwards: 8
I: dblreq.0ha0isndaksdj99sdfafnl3lk233412
Contact: sip:j.user@host.example.com
CSeq: 8 REGISTER
Via: SIP/2.0/UDP 192.0.2.125;branch=z9hG4bKkdjuw23492
Content-Length: 0

INVITE sip:joe@example.com SIP/2.0
t: sip:joe@example.com
From: sip:caller@example.net;tag=141334
Max-Forwards: 8
Call-ID: dblreq.0ha0isnda977644900765@192.0.2.15
CSeq: 8 INVITE
Via: SIP/2.0/UDP 192.0.2.15;branch=z9hG4bKkdjuw380234
Content-Type: application/sdp
Content-Length: 150

",
    );
    raw.extend_from_slice(sdp("192.0.2.15", "192.0.2.15").as_bytes());
    let r = req(&raw);
    assert_eq!(r.method, Method::Register, "only the REGISTER is processed");
    assert!(r.body.is_empty(), "trailing octets discarded");
    assert_eq!(
        r.call_id().unwrap().as_str(),
        "dblreq.0ha0isndaksdj99sdfafnl3lk233412"
    );
}

#[test]
fn semiuri_semicolon_separated_parameters_in_uri_user_part() {
    let raw = crlf(
        "OPTIONS sip:user;par=u%40example.net@example.com SIP/2.0
To: sip:j_user@example.com
From: sip:caller@example.org;tag=33242
Max-Forwards: 3
Call-ID: semiuri.0ha0isndaksdj
CSeq: 8 OPTIONS
Accept: application/sdp, application/pkcs7-mime,
        multipart/mixed, multipart/signed,
        message/sip, message/sipfrag
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKkdjuw
l: 0

",
    );
    let r = req(&raw);
    let u = r.uri.as_sip().unwrap();
    assert_eq!(u.user.as_deref(), Some("user;par=u%40example.net"));
    assert_eq!(u.host, Host::Domain("example.com".into()));
    assert!(u.params.is_empty(), "the ;par belongs to the user part");
    assert_eq!(r.headers.option_tags("Accept").len(), 6);
}

#[test]
fn transports_varied_and_unknown_transport_types() {
    let raw = crlf(
        "OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: <sip:caller@example.com>;tag=323
Max-Forwards: 70
Call-ID:  transports.kijh4akdnaqjkwendsasfdj
Accept: application/sdp
CSeq: 60 OPTIONS
Via: SIP/2.0/UDP t1.example.com;branch=z9hG4bKkdjuw
Via: SIP/2.0/SCTP t2.example.com;branch=z9hG4bKklasjdhf
Via: SIP/2.0/TLS t3.example.com;branch=z9hG4bK2980unddj
Via: SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en
Via: SIP/2.0/TCP t5.example.com;branch=z9hG4bK0a9idfnee
l: 0

",
    );
    let r = req(&raw);
    let t: Vec<Transport> = r
        .headers
        .vias()
        .unwrap()
        .into_iter()
        .map(|v| v.transport)
        .collect();
    assert_eq!(
        t,
        vec![
            Transport::Udp,
            Transport::Sctp,
            Transport::Tls,
            Transport::Other("UNKNOWN".into()),
            Transport::Tcp
        ]
    );
    assert_eq!(
        r.call_id().unwrap().as_str(),
        "transports.kijh4akdnaqjkwendsasfdj"
    );
}

#[test]
fn mpart01_multipart_mime_message_with_binary_part() {
    let mut body = b"--7a9cbec02ceef655\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: binary\r\n\r\nHello\r\n--7a9cbec02ceef655\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n".to_vec();
    body.extend_from_slice(&[
        0x30, 0x82, 0x01, 0x52, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x00, 0xff, 0x0d, 0x0a,
    ]);
    body.extend_from_slice(b"\r\n--7a9cbec02ceef655--\r\n");
    let mut raw = crlf(&format!(
        "MESSAGE sip:kumiko@example.org SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-d87543-4dade06d0bdb11ee-1--d87543-;rport
Max-Forwards: 70
Route: <sip:127.0.0.1:5080>
Identity: r5mwreLuyDRYBi/0TiPwEsY3rEVsk/G2WxhgTV1PF7hHuPBpmCEzqOFnjpPq/cUqP8DqYo6L8lg+kEsk26dybrHq5WrdKfd5CxD3LM0RzEcYJmS1gbBV4UzIkRLSnYlTd5mrs5UgXwOTIkeFs0nJkq1rnzqTM9Rrk=
Identity-Info: <https://127.0.0.1:5080/cert>;alg=rsa-sha1
Contact: <sip:fluffy@127.0.0.1:5070>
To: <sip:kumiko@example.org>
From: <sip:fluffy@example.com>;tag=2fb0dcc9
Call-ID: 3d9485ad0c49859b@Zmx1ZmZ5LW1hYy0xNi5sb2NhbA..
CSeq: 1 MESSAGE
Content-Transfer-Encoding: binary
Content-Type: multipart/mixed;boundary=7a9cbec02ceef655
Date: Sat, 15 Oct 2005 04:44:56 GMT
User-Agent: SIPimp.org/0.2.5 (curses)
Content-Length: {}

",
        body.len()
    ));
    raw.extend_from_slice(&body);
    let r = req(&raw);
    assert_eq!(r.method, Method::Message);
    assert_eq!(&r.body[..], &body[..], "binary body kept byte for byte");
    let ct = r.headers.content_type().unwrap();
    assert!(ct.is("multipart", "mixed"));
    assert_eq!(ct.params.value("boundary"), Some("7a9cbec02ceef655"));
    assert_eq!(r.top_via().unwrap().rport(), Some(None));
}

#[test]
fn unreason_unusual_reason_phrase() {
    let mut raw = crlf(
        "SIP/2.0 200 = 2**3 * 5**2 но сто девяносто девять - простое
Via: SIP/2.0/UDP 192.0.2.198;branch=z9hG4bK1324923
Call-ID: unreason.1234ksdfak3j2erwedfsASdf
CSeq: 35 INVITE
From: sip:user@example.com;tag=11141343
To: sip:user@example.edu;tag=2229
Content-Length: 154
Content-Type: application/sdp
Contact: <sip:user@host198.example.com>

",
    );
    raw.extend_from_slice(sdp("192.0.2.198", "192.0.2.198").as_bytes());
    let r = resp(&raw);
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.reason, "= 2**3 * 5**2 но сто девяносто девять - простое");
    assert_eq!(r.body.len(), 154);
}

#[test]
fn noreason_empty_reason_phrase() {
    let raw = crlf(
        "SIP/2.0 100 \nVia: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe
Call-ID: noreason.asndj203insdf99223ndf
CSeq: 35 INVITE
From: <sip:user@example.com>;tag=39ansfi3
To: <sip:user@example.edu>;tag=902jndnke3
Content-Length: 0
Contact: <sip:user@host105.example.com>

",
    );
    let r = resp(&raw);
    assert_eq!(r.status.as_u16(), 100);
    assert_eq!(r.reason, "");
}

// ---------------------------------------------------------------- 3.1.2 invalid

fn expect_err(raw: &[u8]) -> ParseError {
    match parse(raw) {
        Err(e) => e,
        Ok(m) => panic!("accepted an invalid message: {m:?}"),
    }
}

fn with_body(head: &str, n: usize) -> Vec<u8> {
    let mut raw = crlf(head);
    raw.extend_from_slice(body(n).as_bytes());
    raw
}

#[test]
fn badinv01_extraneous_header_field_separators() {
    let raw = with_body(
        r#"INVITE sip:user@example.com SIP/2.0
To: sip:j.user@example.com
From: sip:caller@example.net;tag=134161461246
Max-Forwards: 7
Call-ID: badinv01.0ha0isndaksdjasdf3234nas
CSeq: 8 INVITE
Via: SIP/2.0/UDP 192.0.2.15;;,;,,
Contact: "Joe" <sip:joe@example.org>;;;;
Content-Length: 152
Content-Type: application/sdp

"#,
        152,
    );
    let e = expect_err(&raw);
    assert!(
        matches!(e, ParseError::BadHeader { name: "Via", .. }),
        "{e}"
    );
    // enough of the message is there to answer 400
    let answer = error_response(&raw, &e).unwrap();
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
}

#[test]
fn clerr_content_length_larger_than_message() {
    let raw = with_body(
        "INVITE sip:user@example.com SIP/2.0
Max-Forwards: 80
To: sip:j.user@example.com
From: sip:caller@example.net;tag=93942939o2
Contact: <sip:caller@hungry.example.net>
Call-ID: clerr.0ha0isndaksdjweiafasdk3
CSeq: 8 INVITE
Via: SIP/2.0/UDP host5.example.com;branch=z9hG4bK-39234-23523
Content-Type: application/sdp
Content-Length: 9999

",
        150,
    );
    let e = expect_err(&raw);
    assert_eq!(
        e,
        ParseError::BodyTooShort {
            declared: 9999,
            available: 150
        }
    );
    assert_eq!(error_response(&raw, &e).unwrap().status.as_u16(), 400);
}

#[test]
fn ncl_negative_content_length() {
    let raw = with_body(
        "INVITE sip:user@example.com SIP/2.0
Max-Forwards: 254
To: sip:j.user@example.com
From: sip:caller@example.net;tag=32394234
Call-ID: ncl.0ha0isndaksdj2193423r542w35
CSeq: 0 INVITE
Via: SIP/2.0/UDP 192.0.2.53;branch=z9hG4bKkdjuw
Contact: <sip:caller@example53.example.net>
Content-Type: application/sdp
Content-Length: -999

",
        150,
    );
    let e = expect_err(&raw);
    assert!(
        matches!(
            e,
            ParseError::BadHeader {
                name: "Content-Length",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn scalar02_request_scalar_fields_with_overlarge_values() {
    let raw = crlf(&format!(
        "REGISTER sip:example.com SIP/2.0
Via: SIP/2.0/TCP host129.example.com;branch=z9hG4bK342sdfoi3
To: <sip:user@example.com>
From: <sip:user@example.com>;tag=239232jh3
CSeq: 36893488147419103232 REGISTER
Call-ID: scalar02.23o0pd9vanlq3wnrlnewofjas9ui32
Max-Forwards: 300
Expires: 1{}
Contact: <sip:user@host129.example.com>
  ;expires=280297596632815
Content-Length: 0

",
        "0".repeat(100)
    ));
    let e = expect_err(&raw);
    assert!(
        matches!(e, ParseError::BadHeader { name: "CSeq", .. }),
        "{e}"
    );
    assert_eq!(error_response(&raw, &e).unwrap().status.as_u16(), 400);
    // the expiry values alone would be legal: delta-seconds saturate (§20.19)
    let fixed = String::from_utf8(raw)
        .unwrap()
        .replace("36893488147419103232", "1")
        .replace("Max-Forwards: 300", "Max-Forwards: 70");
    let r = req(fixed.as_bytes());
    assert_eq!(r.headers.expires(), Some(u32::MAX));
    assert_eq!(
        r.headers.contacts().unwrap().addresses()[0].expires(),
        Some(u32::MAX)
    );
}

#[test]
fn scalarlg_response_scalar_fields_with_overlarge_values() {
    let raw = crlf(
        r#"SIP/2.0 503 Service Unavailable
Via: SIP/2.0/TCP host129.example.com;branch=zzz;received=192.0.2.129
To: <sip:user@example.com>
From: <sip:other@example.net>;tag=2easdjfejw
CSeq: 36893488147419103232 OPTIONS
Call-ID: scalarlg.noase0of0234hn2qofoaf0232aewf2394r
Retry-After: 949302838503028349304023988
Warning: 1812 overture "In Progress"
Content-Length: 0

"#,
    );
    let e = expect_err(&raw);
    assert!(matches!(e, ParseError::BadHeader { name: "CSeq", .. }));
    assert!(error_response(&raw, &e).is_none(), "responses are dropped");
}

#[test]
fn quotbal_unterminated_quoted_string_in_display_name() {
    let raw = with_body(
        r#"INVITE sip:user@example.com SIP/2.0
To: "Mr. J. User <sip:j.user@example.com>
From: sip:caller@example.net;tag=93334
Max-Forwards: 10
Call-ID: quotbal.aksdj
Contact: <sip:caller@host59.example.net>
CSeq: 8 INVITE
Via: SIP/2.0/UDP 192.0.2.59:5050;branch=z9hG4bKkdjuw39234
Content-Type: application/sdp
Content-Length: 152

"#,
        152,
    );
    let e = expect_err(&raw);
    assert!(matches!(e, ParseError::BadHeader { name: "To", .. }), "{e}");
    assert_eq!(error_response(&raw, &e).unwrap().status.as_u16(), 400);
}

#[test]
fn ltgtruri_angle_brackets_around_request_uri() {
    let raw = with_body(
        "INVITE <sip:user@example.com> SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=39291
Max-Forwards: 23
Call-ID: ltgtruri.1@192.0.2.5
CSeq: 1 INVITE
Via: SIP/2.0/UDP 192.0.2.5
Contact: <sip:caller@host5.example.net>
Content-Type: application/sdp
Content-Length: 159

",
        159,
    );
    let e = expect_err(&raw);
    assert!(matches!(e, ParseError::RequestUri { .. }), "{e}");
    assert_eq!(error_response(&raw, &e).unwrap().status.as_u16(), 400);
}

#[test]
fn lwsruri_embedded_lws_in_request_uri() {
    let raw = with_body(
        "INVITE sip:user@example.com; lr SIP/2.0
To: sip:user@example.com;tag=3xfe-9921883-z9f
From: sip:caller@example.net;tag=231413434
Max-Forwards: 5
Call-ID: lwsruri.asdfasdoeoi2323-asdfwrn23-asd834rk423
CSeq: 2130706432 INVITE
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKkdjuw2395
Contact: <sip:caller@host1.example.net>
Content-Type: application/sdp
Content-Length: 159

",
        159,
    );
    assert!(matches!(expect_err(&raw), ParseError::StartLine(_)));
}

#[test]
fn lwsstart_multiple_sp_in_request_line() {
    let raw = with_body(
        "INVITE  sip:user@example.com  SIP/2.0
Max-Forwards: 8
To: sip:user@example.com
From: sip:caller@example.net;tag=8814
Call-ID: lwsstart.dfknq234oi243099adsdfnawe3@example.com
CSeq: 1893884 INVITE
Via: SIP/2.0/UDP host1.example.com;branch=z9hG4bKkdjuw3923
Contact: <sip:caller@host1.example.net>
Content-Type: application/sdp
Content-Length: 150

",
        150,
    );
    assert!(matches!(expect_err(&raw), ParseError::StartLine(_)));
}

#[test]
fn trws_sp_at_end_of_request_line() {
    let raw = crlf(
        "OPTIONS sip:remote-target@example.com SIP/2.0  
Via: SIP/2.0/TCP host1.example.com;branch=z9hG4bK299342093
To: <sip:remote-target@example.com>
From: <sip:local-resource@example.com>;tag=329429089
Call-ID: trws.oicu34958239neffasdhr2345r
Accept: application/sdp
CSeq: 238923 OPTIONS
Max-Forwards: 70
Content-Length: 0

",
    );
    // RFC 4475 allows either leniency or rejection; we reject, and can answer.
    let e = expect_err(&raw);
    assert!(matches!(e, ParseError::StartLine(_)), "{e}");
    assert_eq!(error_response(&raw, &e).unwrap().status.as_u16(), 400);
}

#[test]
fn escruri_escaped_headers_in_request_uri() {
    let raw = with_body(
        "INVITE sip:user@example.com?Route=%3Csip:example.com%3E SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=341518
Max-Forwards: 7
Contact: <sip:caller@host39923.example.net>
Call-ID: escruri.23940-asdfhj-aje3br-234q098w-fawerh2q-h4n5
CSeq: 149209342 INVITE
Via: SIP/2.0/UDP host-of-the-hour.example.com;branch=z9hG4bKkdjuw
Content-Type: application/sdp
Content-Length: 150

",
        150,
    );
    // The URI is well formed, but §19.1.1 forbids headers in a Request-URI: the
    // parser refuses it so that a UA answers 400.
    let e = expect_err(&raw);
    assert!(matches!(e, ParseError::RequestUri { .. }), "{e}");
}

#[test]
fn baddate_invalid_time_zone_is_accepted_and_ignored() {
    let raw = with_body(
        "INVITE sip:user@example.com SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=2234923
Max-Forwards: 70
Call-ID: baddate.239423mnsadf3j23lj42--sedfnm234
CSeq: 1392934 INVITE
Via: SIP/2.0/UDP host.example.com;branch=z9hG4bKkdjuw
Date: Fri, 01 Jan 2010 16:00:00 EST
Contact: <sip:caller@host5.example.net>
Content-Type: application/sdp
Content-Length: 150

",
        150,
    );
    // RFC 4475 §3.1.2.12: a UA may ignore the Date header; whatsip never reads it.
    let r = req(&raw);
    assert_eq!(r.headers.get("Date"), Some("Fri, 01 Jan 2010 16:00:00 EST"));
}

#[test]
fn regbadct_unbracketed_contact_with_uri_headers() {
    let raw = crlf(
        "REGISTER sip:example.com SIP/2.0
To: sip:user@example.com
From: sip:user@example.com;tag=998332
Max-Forwards: 70
Call-ID: regbadct.k345asrl3fdbv@10.0.0.1
CSeq: 1 REGISTER
Via: SIP/2.0/UDP 135.180.130.133:5060;branch=z9hG4bKkdjuw
Contact: sip:user@example.com?Route=%3Csip:sip.example.com%3E
l: 0

",
    );
    let e = expect_err(&raw);
    assert!(
        matches!(
            e,
            ParseError::BadHeader {
                name: "Contact",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn badaspec_spaces_within_addr_spec() {
    let raw = crlf(
        r#"OPTIONS sip:user@example.org SIP/2.0
Via: SIP/2.0/UDP host4.example.com:5060;branch=z9hG4bKkdju43234
Max-Forwards: 70
From: "Bell, Alexander" <sip:a.g.bell@example.com>;tag=433423
To: "Watson, Thomas" < sip:t.watson@example.org >
Call-ID: badaspec.sdf0234n2nds0a099u23h3hnnw009cdkne3
Accept: application/sdp
CSeq: 3923239 OPTIONS
l: 0

"#,
    );
    let e = expect_err(&raw);
    assert!(matches!(e, ParseError::BadHeader { name: "To", .. }), "{e}");
}

#[test]
fn baddn_non_token_characters_in_display_name() {
    let raw = crlf(
        "OPTIONS sip:t.watson@example.org SIP/2.0
Via:     SIP/2.0/UDP c.example.com:5060;branch=z9hG4bKkdjuw
Max-Forwards:      70
From:    Bell, Alexander <sip:a.g.bell@example.com>;tag=43
To:      Watson, Thomas <sip:t.watson@example.org>
Call-ID: baddn.31415@c.example.com
Accept: application/sdp
CSeq:    3923239 OPTIONS
l: 0

",
    );
    let e = expect_err(&raw);
    assert!(
        matches!(e, ParseError::BadHeader { name: "From", .. }),
        "{e}"
    );
}

#[test]
fn badvers_unknown_protocol_version_gets_505() {
    let raw = crlf(
        "OPTIONS sip:t.watson@example.org SIP/7.0
Via:     SIP/7.0/UDP c.example.com;branch=z9hG4bKkdjuw
Max-Forwards:     70
From:    A. Bell <sip:a.g.bell@example.com>;tag=qweoiqpe
To:      T. Watson <sip:t.watson@example.org>
Call-ID: badvers.31417@c.example.com
CSeq:    1 OPTIONS
l: 0

",
    );
    let e = expect_err(&raw);
    assert_eq!(e, ParseError::Version("SIP/7.0".into()));
    let answer = error_response(&raw, &e).unwrap();
    assert_eq!(answer.status, StatusCode::VERSION_NOT_SUPPORTED);
    assert_eq!(
        answer.call_id().unwrap().as_str(),
        "badvers.31417@c.example.com"
    );
}

#[test]
fn mismatch01_start_line_and_cseq_method_mismatch() {
    let raw = crlf(
        "OPTIONS sip:user@example.com SIP/2.0
To: sip:j.user@example.com
From: sip:caller@example.net;tag=34525
Max-Forwards: 6
Call-ID: mismatch01.dj0234sxdfl3
CSeq: 8 INVITE
Via: SIP/2.0/UDP host.example.com;branch=z9hG4bKkdjuw
l: 0

",
    );
    let e = expect_err(&raw);
    assert!(matches!(e, ParseError::CSeqMismatch { .. }), "{e}");
    assert_eq!(error_response(&raw, &e).unwrap().status.as_u16(), 400);
}

#[test]
fn mismatch02_unknown_method_with_cseq_mismatch() {
    let raw = with_body(
        "NEWMETHOD sip:user@example.com SIP/2.0
To: sip:j.user@example.com
From: sip:caller@example.net;tag=34525
Max-Forwards: 6
Call-ID: mismatch02.dj0234sxdfl3
CSeq: 8 INVITE
Contact: <sip:caller@host.example.net>
Via: SIP/2.0/UDP host.example.net;branch=z9hG4bKkdjuw
Content-Type: application/sdp
l: 138

",
        138,
    );
    assert!(matches!(expect_err(&raw), ParseError::CSeqMismatch { .. }));
}

#[test]
fn bigcode_overlarge_response_code_is_dropped() {
    let raw = crlf(
        "SIP/2.0 4294967301 better not break the receiver
Via: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe
Call-ID: bigcode.asdof3uj203asdnf3429uasdhfas3ehjasdfas9i
CSeq: 353494 INVITE
From: <sip:user@example.com>;tag=39ansfi3
To: <sip:user@example.edu>;tag=902jndnke3
Content-Length: 0
Contact: <sip:user@host105.example.com>

",
    );
    let e = expect_err(&raw);
    assert!(matches!(e, ParseError::StartLine(_)));
    assert!(error_response(&raw, &e).is_none());
}

// ------------------------------------------------- 3.1.3 / 3.1.4 semantics

#[test]
fn badbranch_bare_magic_cookie_parses_but_is_not_rfc3261() {
    let raw = crlf(
        "OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: sip:caller@example.org;tag=33242
Max-Forwards: 3
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK
Accept: application/sdp
Call-ID: badbranch.sadonfo23i420jv0as0derf3j3n
CSeq: 8 OPTIONS
l: 0

",
    );
    let r = req(&raw);
    assert_eq!(r.branch(), Some(Branch::new("z9hG4bK")));
    assert!(!r.branch().unwrap().is_rfc3261());
    // transaction matching falls back to the RFC 2543 key
    assert!(TxnKey::server(&r).is_some());
}

#[test]
fn insuf_missing_required_header_fields_cannot_be_answered() {
    let raw = with_body(
        "INVITE sip:user@example.com SIP/2.0
CSeq: 193942 INVITE
Via: SIP/2.0/UDP 192.0.2.95;branch=z9hG4bKkdj.insuf
Content-Type: application/sdp
l: 152

",
        152,
    );
    let e = expect_err(&raw);
    assert!(matches!(e, ParseError::MissingHeader(_)), "{e}");
    assert!(
        error_response(&raw, &e).is_none(),
        "no From/To/Call-ID to copy"
    );
}

#[test]
fn unkscm_unknown_request_uri_scheme_parses_for_a_416() {
    let raw = crlf(
        "OPTIONS nobodyKnowsThisScheme:totallyopaque SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=384
Max-Forwards: 3
Call-ID: unkscm.nasdfasser0q239nwsdfasdkl34
CSeq: 3923423 OPTIONS
Via: SIP/2.0/TCP host9.example.com;branch=z9hG4bKkdjuw39234
Content-Length: 0

",
    );
    let r = req(&raw);
    // the UA answers 416 Unsupported URI Scheme
    assert!(matches!(r.uri, Uri::Other { ref scheme, .. } if scheme == "nobodyKnowsThisScheme"));
    assert_eq!(r.uri.to_string(), "nobodyKnowsThisScheme:totallyopaque");
}

#[test]
fn novelsc_known_but_atypical_scheme() {
    let raw = crlf(
        "OPTIONS soap.beep://192.0.2.103:3002 SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=384
Max-Forwards: 3
Call-ID: novelsc.asdfasser0q239nwsdfasdkl34
CSeq: 3923423 OPTIONS
Via: SIP/2.0/TCP host9.example.com;branch=z9hG4bKkdjuw39234
Content-Length: 0

",
    );
    assert_eq!(req(&raw).uri.scheme(), "soap.beep");
}

#[test]
fn unksm2_unknown_uri_scheme_in_to() {
    let raw = crlf(
        "REGISTER sip:example.com SIP/2.0
To: isbn:2983792873
From: <http://www.example.com>;tag=3234233
Call-ID: unksm2.daksdj@hyphenated-host.example.com
CSeq: 234902 REGISTER
Max-Forwards: 70
Via: SIP/2.0/UDP 192.0.2.21:5060;branch=z9hG4bKkdjuw
Contact: <name:John_Smith>
l: 0

",
    );
    let r = req(&raw);
    assert_eq!(r.to().unwrap().uri.scheme(), "isbn");
}

#[test]
fn bext01_unknown_require_is_visible_for_a_420() {
    let raw = crlf(
        "OPTIONS sip:user@example.com SIP/2.0
To: sip:j_user@example.com
From: sip:caller@example.net;tag=242etr
Max-Forwards: 6
Call-ID: bext01.0ha0isndaksdj
Require: nothingSupportedHere
Proxy-Require: noProxiesSupportThis, nothingSupportedHere
Proxy-Require: noProxiesSupportThis
CSeq: 8 OPTIONS
Via: SIP/2.0/UDP host.example.com;branch=z9hG4bKkdjuw
l: 0

",
    );
    let r = req(&raw);
    assert_eq!(
        r.headers.option_tags("Require"),
        vec!["nothingSupportedHere"]
    );
    assert_eq!(r.headers.option_tags("Proxy-Require").len(), 3);
}

#[test]
fn multi01_multiple_values_in_single_value_fields() {
    let raw = with_body(
        "INVITE sip:user@company.com SIP/2.0
Contact: <sip:caller@host25.example.net>
Via: SIP/2.0/UDP 192.0.2.25;branch=z9hG4bKkdjuw
Max-Forwards: 70
CSeq: 5 INVITE
Call-ID: multi01.98asdh@192.0.2.1
CSeq: 59 INVITE
Call-ID: multi01.98asdh@192.0.2.2
From: sip:caller@example.com;tag=3413415
To: sip:user@example.com
To: sip:other@example.net
From: sip:caller@example.net;tag=2923420123
Content-Type: application/sdp
l: 154
Call-ID: multi01.98asdh@192.0.2.3
Max-Forwards: 5

",
        154,
    );
    assert!(matches!(expect_err(&raw), ParseError::DuplicateHeader(_)));
}

#[test]
fn mcl01_multiple_content_length_values() {
    let raw = crlf(
        "OPTIONS sip:user@example.com SIP/2.0
Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bK293423
To: sip:user@example.com
From: sip:other@example.net;tag=3923942
Call-ID: mcl01.fhn2323orihawfdoa3o4r52o3irsdf
CSeq: 15932 OPTIONS
Content-Length: 13
Max-Forwards: 60
Content-Length: 5
Content-Type: text/plain

There's no way to know how many octets are supposed to be here.
",
    );
    assert_eq!(
        expect_err(&raw),
        ParseError::DuplicateHeader("Content-Length")
    );
}

#[test]
fn bcast_broadcast_via_parses_and_is_left_to_the_transport() {
    let raw = with_body(
        "SIP/2.0 200 OK
Via: SIP/2.0/UDP 192.0.2.198;branch=z9hG4bK1324923
Via: SIP/2.0/UDP 255.255.255.255;branch=z9hG4bK1saber23
Call-ID: bcast.0384840201234ksdfak3j2erwedfsASdf
CSeq: 35 INVITE
From: sip:user@example.com;tag=11141343
To: sip:user@example.edu;tag=2229
Content-Length: 155
Content-Type: application/sdp
Contact: <sip:user@host28.example.com>

",
        155,
    );
    let r = resp(&raw);
    let vias = r.headers.vias().unwrap();
    assert_eq!(vias[1].host, Host::Ipv4("255.255.255.255".parse().unwrap()));
}

#[test]
fn zeromf_max_forwards_of_zero() {
    let raw = crlf(
        "OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=3ghsd41
Call-ID: zeromf.jfasdlfnm2o2l43r5u0asdfas
CSeq: 39234321 OPTIONS
Via: SIP/2.0/UDP host1.example.com;branch=z9hG4bKkdjuw2349i
Max-Forwards: 0
Content-Length: 0

",
    );
    assert_eq!(req(&raw).headers.max_forwards(), Some(0));
}

#[test]
fn inv2543_rfc2543_style_invite_without_branch_or_tag() {
    let mut raw = crlf(
        "INVITE sip:UserB@example.com SIP/2.0
Via: SIP/2.0/UDP iftgw.example.com
From: <sip:+13035551111@ift.client.example.net;user=phone>
Record-Route: <sip:UserB@example.com;maddr=ss1.example.com>
To: sip:+16505552222@ss1.example.net;user=phone
Call-ID: inv2543.1717@ift.client.example.com
CSeq: 56 INVITE
Content-Type: application/sdp

",
    );
    raw.extend_from_slice(sdp("192.0.2.5", "192.0.2.5").as_bytes());
    let r = req(&raw);
    assert_eq!(r.from_tag(), None);
    assert_eq!(r.branch(), None);
    assert_eq!(
        r.body.len(),
        150,
        "no Content-Length over UDP: body runs to the end"
    );
    assert!(TxnKey::server(&r).is_some());
}

// ------------------------------------------------------------- §4 IPv6

#[test]
fn ipv6_good_and_port_forms() {
    for (uri, port) in [
        ("sip:[2001:db8::10]", None),
        ("sip:[2001:db8::10:5070]", None),
        ("sip:[2001:db8::10]:5070", Some(5070)),
        ("sip:user@[2001:db8::10];maddr=[2001:db8::20]", None),
    ] {
        let u = Uri::parse(uri).unwrap();
        let s = u.as_sip().unwrap();
        assert!(matches!(s.host, Host::Ipv6(_)), "{uri}");
        assert_eq!(s.port, port, "{uri}");
        assert_eq!(Uri::parse(&u.to_string()).unwrap(), u);
    }
    let raw = crlf(
        "OPTIONS sip:[2001:db8::10] SIP/2.0
To: sip:user@example.com
From: sip:user@example.com;tag=81x2
Via: SIP/2.0/UDP [2001:db8::9:1];branch=z9hG4bKas3-111;received=[2001:db8::9:255]
Call-ID: SSG9559905523997077@hlau_4100
Max-Forwards: 70
CSeq: 921 OPTIONS
Content-Length: 0

",
    );
    let r = req(&raw);
    assert_eq!(
        r.top_via().unwrap().received(),
        Some("2001:db8::9:255".parse().unwrap())
    );
}

#[test]
fn ipv6_bad_unbracketed_host_is_rejected() {
    let raw = crlf(
        "REGISTER sip:2001:db8::10 SIP/2.0
To: sip:user@example.com
From: sip:user@example.com;tag=81x2
Via: SIP/2.0/UDP [2001:db8::9:1];branch=z9hG4bKas3-111
Call-ID: SSG9559905523997077@hlau_4100
Max-Forwards: 70
Contact: \"Caller\" <sip:caller@[2001:db8::1]>
CSeq: 98176 REGISTER
Content-Length: 0

",
    );
    assert!(matches!(expect_err(&raw), ParseError::RequestUri { .. }));
}

// ------------------------------------------------------------- round trips

#[test]
fn every_valid_torture_message_survives_print_then_parse() {
    let valid: Vec<Vec<u8>> = vec![
        longreq(),
        crlf(
            "OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: caller<sip:caller@example.com>;tag=323
Max-Forwards: 70
Call-ID: lwsdisp.1234abcd@funky.example.com
CSeq: 60 OPTIONS
Via: SIP/2.0/UDP funky.example.com;branch=z9hG4bKkdjuw
l: 0

",
        ),
    ];
    for raw in valid {
        let m = parse(&raw).unwrap();
        let again = parse(&m.to_bytes()).unwrap();
        assert_eq!(again, m);
    }
}

mod roundtrip {
    use proptest::prelude::*;
    use whatsip_sip::{ParseLimits, SipMessage};

    fn token() -> impl Strategy<Value = String> {
        "[A-Za-z0-9][A-Za-z0-9.!%*_+`'~-]{0,15}"
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn print_then_parse_is_identity(
            method in prop::sample::select(vec!["INVITE", "OPTIONS", "BYE", "INFO", "NOTIFY", "X-CUSTOM"]),
            user in "[a-z0-9+._-]{1,12}",
            host in prop::sample::select(vec!["example.com", "192.0.2.7", "[2001:db8::5]", "pbx.example.net."]),
            port in prop::option::of(1u16..),
            transport in prop::sample::select(vec!["UDP", "TCP", "TLS"]),
            branch in token(),
            from_tag in token(),
            to_tag in prop::option::of(token()),
            display in prop::option::of("[ -~&&[^\"\\\\]]{0,20}"),
            call_id in "[A-Za-z0-9.!%*_+`'~()<>:/?{}-]{1,20}(@[a-z0-9.]{1,10})?",
            seq in 0u32..(1 << 31),
            extra in prop::collection::vec((token(), "[ -~]{0,30}"), 0..5),
            body in prop::collection::vec(any::<u8>(), 0..200),
        ) {
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            let display = display.map(|d| format!("\"{d}\" ")).unwrap_or_default();
            let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
            let mut head = format!(
                "{method} sip:{user}@{host}{port} SIP/2.0\r\nVia: SIP/2.0/{transport} {host}{port};branch=z9hG4bK{branch};rport\r\nFrom: {display}<sip:{user}@{host}>;tag={from_tag}\r\nTo: <sip:{user}@{host}>{to_tag}\r\nCall-ID: {call_id}\r\nCSeq: {seq} {method}\r\nMax-Forwards: 70\r\n"
            );
            for (i, (n, v)) in extra.iter().enumerate() {
                head += &format!("X-{i}-{n}: {}\r\n", v.trim());
            }
            head += &format!("Content-Length: {}\r\n\r\n", body.len());
            let mut raw = head.into_bytes();
            raw.extend_from_slice(&body);
            let limits = ParseLimits::default();
            let m = SipMessage::parse(&raw, &limits).unwrap();
            let printed = m.to_bytes();
            let again = SipMessage::parse(&printed, &limits).unwrap();
            prop_assert_eq!(&again, &m);
            prop_assert_eq!(again.to_bytes(), printed);
        }
    }
}
